"""The README's quick-start block runs as written."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs():
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md has no quick-start python block"
    namespace: dict = {}
    exec(compile(block.group(1), "README quick start", "exec"), namespace)
    assert namespace["y"].shape == namespace["x"].shape
    assert namespace["x"].grad is not None and namespace["x"].grad.abs().sum() > 0
    assert namespace["model"](namespace["x"]).shape == (8, 10)


def test_ci_runs_the_readme_setup_commands():
    """`.ci/run` runs exactly README's two set-up commands (install + main job, then the tests)."""
    setup = README.read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2, commands
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"{command!r} is not a line of .ci/run"
    assert commands[0].endswith("diffjpeg bench")
