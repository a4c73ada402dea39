"""bench/gpu.py, the prepared GPU run, runs end to end on the CPU with --quick (so it cannot rot)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_script_quick_on_cpu(tmp_path):
    out = tmp_path / "report.md"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--quick", "--out",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = out.read_text()
    for title in ("CPU/device agreement of every layer", "Forward+backward against kornia", "Exact forward images/s",
                  "EOTPGD", "OnePixel", "NCCL"):
        assert f"## {title}" in report or title in report, title
    assert "All sections passed." in report
    assert "| DiffJPEG ste | 0 | 0 | bit-identical" in report
