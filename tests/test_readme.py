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
