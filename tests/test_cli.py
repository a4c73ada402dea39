"""The ``diffjpeg`` command: dispatch, errors, and a quick run of the report (the main job)."""
from __future__ import annotations

import pytest

from diffjpeg.cli import main


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert "report" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["nosuch"]) == 2
    assert "unknown command 'nosuch'" in capsys.readouterr().err


def test_quick_report_writes_markdown(tmp_path, capsys):
    out = tmp_path / "report.md"
    assert main(["report", "--quick", "--repeats", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| diffjpeg ste | 420 | 100.00 | 100.00 | 100.000 |" in text  # bit-identical to Pillow
    assert "kornia" in text and "exact forward" in text


@pytest.mark.parametrize("argv, message", [
    (["report", "--repeats", "0"], "--repeats must be >= 1"),
    (["report", "--device", "banana"], "--device must be a torch device"),
])
def test_report_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "train-reconstruction", "learn-qtables"])
def test_training_commands_refuse_a_missing_out_folder(command, tmp_path, capsys):
    out = tmp_path / "nosuch" / "w.pt"
    assert main([command, "--out", str(out), "--seed", "1", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"{command}: --out folder {str(out.parent)!r} does not exist"
    assert not out.parent.exists()


def test_learn_qtables_options_state_their_defaults():
    """Every option of `diffjpeg learn-qtables` but --out (required) says what it defaults to."""
    from diffjpeg.eval.learn_qtables import parser

    missing = [a.option_strings[0] for a in parser()._actions
               if a.option_strings and a.dest not in ("help", "out") and "default" not in (a.help or "")]
    assert missing == []
