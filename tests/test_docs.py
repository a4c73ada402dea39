"""README's Layout section names every module, and the docs' examples run."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_layout_names_every_module():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = []
    for path in sorted((ROOT / "diffjpeg").rglob("*.py")):
        if path.name in ("__main__.py",) or "__pycache__" in path.parts:
            continue
        folder = path.parent.relative_to(ROOT).as_posix()
        if path.name == "__init__.py":
            if f"{folder}/" not in layout and f"{folder}/__init__.py" not in layout:
                missing.append(str(path.relative_to(ROOT)))
        elif not (re.search(rf"\b{re.escape(path.stem)}\b", layout) and (f"{folder}/" in layout)):
            missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"README.md's Layout does not name {missing}"


def test_codec_page_functional_example_runs():
    page = (ROOT / "docs" / "codec.md").read_text()
    section = page.split("## Functional forms", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(block, "docs/codec.md", "exec"), {})
