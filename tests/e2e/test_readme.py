"""The Python code blocks of the README and of every docs/*.md page run.

A page's blocks run in order, in one namespace of their own, so each page must
be self-contained.  Temporary directories the blocks create go under the
test's own temporary directory.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def python_blocks(page: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def run_blocks(page: Path, name: str) -> None:
    namespace: dict[str, object] = {"__name__": name}
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Blocks run in a fresh directory; their tempfile.mkdtemp() lands in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 2


def test_readme_python_blocks_run(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_blocks(README, "readme")
    out = capsys.readouterr().out
    assert "'requested', 'routed', 'submitted'" in out
    assert "mobile - must be a Japanese mobile number" in out


DOC_PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_docs_python_blocks_run(page: Path, scratch: Path) -> None:
    """Every docs page: its Python blocks run (a page without any passes), and
    no block is fenced as Python under another name, which would not run."""
    fences = re.findall(r"^```[ \t]*(\S+)", page.read_text(encoding="utf-8"), re.M)
    assert [f for f in fences if f.lower().startswith("py") and f != "python"] == []
    run_blocks(page, f"docs.{page.stem}")
