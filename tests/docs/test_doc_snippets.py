"""Code that the docs show but do not run: every ```python block compiles and every
```toml block parses (a typo in an example fails here, not in a reader's hands)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from doc_blocks import Block, parse_blocks

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _snippets(language: str) -> list[Block]:
    return [block for path in FILES if path.is_file()
            for block in parse_blocks(path, languages=frozenset({language}))]


PYTHON = _snippets("python")
TOML = _snippets("toml")


@pytest.mark.parametrize("block", PYTHON, ids=[block.ident for block in PYTHON])
def test_python_snippet_compiles(block: Block) -> None:
    compile(block.text, block.ident, "exec")


@pytest.mark.parametrize("block", TOML, ids=[block.ident for block in TOML])
def test_toml_snippet_parses(block: Block) -> None:
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        raise AssertionError(f"{block.ident}: {exc}") from None


def test_snippets_were_found() -> None:
    assert len(PYTHON) >= 3 and len(TOML) >= 3, (len(PYTHON), len(TOML))
