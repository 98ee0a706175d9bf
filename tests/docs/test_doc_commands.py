"""Every command in README.md and docs/*.md is run, in order, and must succeed.

One test per shell block (``sh``, ``bash``, ``shell``, ``console``), named FILE:LINE. The
blocks of one file share a scratch directory and the servers they start (see
doc_runner.py); a block marked ``<!-- doc-test: skip REASON -->`` or whose ``requires``
are absent is skipped with the reason. The conventions are in tests/docs/README.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from doc_blocks import Block, DirectiveError, automatic_skip, parse_blocks, programs
from doc_runner import REPO, PROJECT_VENV, DocSession, missing_requirement

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in DOC_FILES:
        if not path.is_file():
            continue
        try:
            blocks.extend(parse_blocks(path))
        except DirectiveError as exc:
            errors.append(str(exc))
    return blocks, errors


BLOCKS, DIRECTIVE_ERRORS = _collect()
LAST_OF_FILE = {block.path: block.line for block in BLOCKS}

pytestmark = pytest.mark.skipif(not (PROJECT_VENV / "bin" / "python").exists(),
                                reason=f"no project virtualenv at {PROJECT_VENV} (run scripts/setup.sh)")


@pytest.fixture(scope="module")
def sessions() -> Iterator[dict[Path, DocSession]]:
    """One DocSession per Markdown file, created on its first block, closed after its last
    (or at the end of the module, when a selection left the last one out)."""
    opened: dict[Path, DocSession] = {}
    yield opened
    for session in opened.values():
        session.close()


def test_directives_parse() -> None:
    """A doc-test comment that cannot be understood is an error, not a silent default."""
    assert not DIRECTIVE_ERRORS, "\n".join(DIRECTIVE_ERRORS)


def test_docs_have_command_blocks() -> None:
    """The collector finds the blocks (a broken parser must not pass by running nothing)."""
    files = {block.path.name for block in BLOCKS}
    assert {"README.md", "user-guide.md", "plugin-authors.md"} <= files, files


@pytest.mark.parametrize("block", BLOCKS, ids=[block.ident for block in BLOCKS])
def test_doc_block(block: Block, sessions: dict[Path, DocSession]) -> None:
    directives = block.directives
    if directives.skip is not None:
        pytest.skip(f"{block.ident}: {directives.skip}")
    automatic = automatic_skip(block.commands())
    if automatic is not None:
        pytest.skip(f"{block.ident}: {automatic}")
    # what the block needs: its requires directive, and every bare program it runs
    needed = [*directives.requires, *(name for name in programs(block.commands()) if name not in directives.requires)]
    reasons = [why for item in needed if (why := missing_requirement(item))]
    if reasons:
        pytest.skip(f"{block.ident}: {'; '.join(reasons)}")
    session = sessions.get(block.path)
    if session is None:
        session = sessions[block.path] = DocSession(block.path.name)
    try:
        result = session.run(block)
        output = result.stdout + result.stderr
        assert result.returncode == directives.exit_status, result.explain() + "\n" + session.background_logs()
        for text in directives.expect:
            assert re.search(text, output), f"{block.ident}: output lacks /{text}/\n" + result.explain()
    finally:
        if LAST_OF_FILE[block.path] == block.line:
            sessions.pop(block.path).close()
