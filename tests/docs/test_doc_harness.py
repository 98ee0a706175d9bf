"""The docs test's own machinery: block parsing, directives, and the rewriting rules."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from doc_blocks import (
    DirectiveError,
    automatic_skip,
    programs,
    console_commands,
    installs_software,
    is_serve_command,
    local_ports,
    logical_lines,
    parse_blocks,
    substitute_ports,
)
from doc_runner import PROJECT_VENV, DocSession, group_alive, make_overlay_venv, missing_requirement

DOC = """# Title

Some text.

```sh
echo one
```

<!-- doc-test: exit 1 -->
<!-- doc-test: expect refused -->

```bash
false
```

```python
print("not a command")
```

<!-- doc-test: skip needs a real RDMA NIC -->
````console
$ datamover plugins
TRANSPORT ...
$ cat > a.toml <<'EOF'
[target]
EOF
$ echo a \\
> b
output line
````
"""


def test_parse_blocks_languages_lines_and_directives() -> None:
    blocks = parse_blocks(Path("doc.md"), DOC)
    assert [(b.language, b.line) for b in blocks] == [("sh", 5), ("bash", 12), ("console", 21)]
    assert blocks[0].directives.exit_status == 0 and blocks[0].text == "echo one\n"
    assert blocks[1].directives.exit_status == 1 and blocks[1].directives.expect == ["refused"]
    assert blocks[2].directives.skip == "needs a real RDMA NIC"
    assert blocks[2].ident == "doc.md:21"


def test_directive_must_be_right_before_the_fence() -> None:
    text = "<!-- doc-test: exit 3 -->\nA paragraph in between.\n\n```sh\nfalse\n```\n"
    (block,) = parse_blocks(Path("d.md"), text)
    assert block.directives.exit_status == 0


@pytest.mark.parametrize("comment, message", [
    ("<!-- doc-test: skipp typo -->", "unknown doc-test directive 'skipp'"),
    ("<!-- doc-test: skip -->", "'skip' needs a reason"),
    ("<!-- doc-test: exit one -->", "'exit' needs a status"),
    ("<!-- doc-test: timeout 0 -->", "'timeout' must be in"),
    ("<!-- doc-test: env =x -->", "'env' expects NAME=VALUE"),
    ("<!-- doc-test: background ready=( -->", "bad ready= regex"),
])
def test_bad_directives_are_errors_naming_the_line(comment: str, message: str) -> None:
    with pytest.raises(DirectiveError, match="d.md:2") as info:
        parse_blocks(Path("d.md"), f"text\n{comment}\n```sh\ntrue\n```\n")
    assert message in str(info.value)


def test_directive_values() -> None:
    text = ("<!-- doc-test: requires tgtd, module:pyverbs -->\n<!-- doc-test: env A=1 B='x y' -->\n"
            "<!-- doc-test: timeout 12.5 -->\n<!-- doc-test: background ready=listening -->\n```sh\nx\n```\n")
    (block,) = parse_blocks(Path("d.md"), text)
    d = block.directives
    assert d.requires == ["tgtd", "module:pyverbs"] and d.env == {"A": "1", "B": "x y"}
    assert d.timeout == 12.5 and d.background and d.ready == "listening"


def test_console_keeps_commands_continuations_and_heredocs_only() -> None:
    (block,) = [b for b in parse_blocks(Path("d.md"), DOC) if b.language == "console"]
    assert block.commands() == ("datamover plugins\ncat > a.toml <<'EOF'\n[target]\nEOF\necho a \\\nb\n")
    assert console_commands("no prompt here\n") == "\n"


def test_logical_lines_join_continuations_and_isolate_heredoc_bodies() -> None:
    script = ("cat > x <<'EOF'\ndatamover target serve --iqn a\nEOF\n"
              "datamover target serve --portal 127.0.0.1:3260 \\\n    --iqn b\necho done\n")
    pieces = logical_lines(script)
    assert [(first, last, body) for first, last, _, body in pieces] == [
        (0, 0, False), (1, 2, True), (3, 4, False), (5, 5, False)]
    serving = [text for _, _, text, body in pieces if not body and is_serve_command(text)]
    assert serving == ["datamover target serve --portal 127.0.0.1:3260 \\\n    --iqn b"]


@pytest.mark.parametrize("line, expected", [
    (".venv/bin/datamover target serve -c x.toml", True),
    ("X=1 datamover -v target serve --lun memory,size=1M", True),
    ("datamover target serve -c x.toml &", False),
    ("datamover compare --target tcp=127.0.0.1:3260", False),
    ("echo datamover target serve", False),
])
def test_serve_detection(line: str, expected: bool) -> None:
    assert is_serve_command(line) is expected


def test_ports_are_substituted_consistently_and_port_zero_kept() -> None:
    text = 'portals = ["127.0.0.1:3260"]\n--portal 127.0.0.1:3260 --target tcp=localhost:3261 x:3262 127.0.0.1:0'
    assert local_ports(text) == [3260, 3261]
    out = substitute_ports(text, {3260: 40001, 3261: 40002})
    assert out == ('portals = ["127.0.0.1:40001"]\n--portal 127.0.0.1:40001 --target tcp=localhost:40002 '
                   "x:3262 127.0.0.1:0")
    assert substitute_ports("10.127.0.0.1:3260", {3260: 1}) == "10.127.0.0.1:3260"


@pytest.mark.parametrize("text, found", [
    ("scripts/setup.sh", "scripts/setup.sh"),
    ("apt-get install -y tgt", "apt-get"),
    ("sudo apt install tgt", "sudo apt"),
    ("DATAMOVER_PEERS=0 scripts/test.sh tests/core", "scripts/test.sh"),
    ("scripts/install-peers.sh", "scripts/install-peers.sh"),
    (".venv/bin/datamover compare  # like scripts/compare.sh does", "scripts/compare.sh"),
    (".venv/bin/datamover plugins", None),
    ("cat scripts/setup.sh.orig", None),
])
def test_installer_detection(text: str, found: str | None) -> None:
    assert installs_software(text) == found


def test_requirements() -> None:
    assert missing_requirement("bash") is None
    assert missing_requirement("no-such-program-xyz") == "needs no-such-program-xyz (not installed)"
    assert missing_requirement("path:/no/such/file") == "needs /no/such/file (absent)"
    assert missing_requirement("env:DATAMOVER_DOCTEST_UNSET_VARIABLE") is not None
    assert (missing_requirement("root") is None) == (os.geteuid() == 0)


needs_venv = pytest.mark.skipif(not (PROJECT_VENV / "bin" / "python").exists(),
                                reason=f"no project virtualenv at {PROJECT_VENV}")


@needs_venv
def test_overlay_venv_imports_the_project_but_installs_into_itself(tmp_path: Path) -> None:
    overlay = make_overlay_venv(tmp_path / "venv")
    probe = subprocess.run([str(overlay / "bin" / "python"), "-c",
                            "import sys, datamover, pluggy; print(sys.prefix)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == overlay
    script = overlay / "bin" / "datamover"
    assert script.read_text().startswith(f"#!{overlay / 'bin' / 'python'}\n")


@needs_venv
def test_session_backgrounds_a_server_and_stops_it() -> None:
    """A serve line is started in the background, awaited, reachable by a later block
    through the same substituted port, and stopped on close."""
    text = ("```sh\n.venv/bin/datamover target serve --transport tcp --portal 127.0.0.1:3260 "
            "--iqn iqn.2026-11.org.example:h --lun memory,size=1M\n```\n\n"
            "```sh\n.venv/bin/datamover discover --portal 127.0.0.1:3260\n```\n")
    first, second = parse_blocks(Path("h.md"), text)
    session = DocSession("h.md")
    try:
        started = session.run(first)
        assert started.returncode == 0, started.explain()
        assert len(session.background) == 1
        port = session.ports[3260]
        assert port != 3260 and f"127.0.0.1:{port}" in started.stderr
        found = session.run(second)
        assert found.returncode == 0, found.explain()
        assert f"127.0.0.1:{port},1 iqn.2026-11.org.example:h" in found.stdout
        group = session.background[0]
    finally:
        session.close()
    assert not group_alive(group), "the background target outlived its session"


@needs_venv
def test_session_reports_failures_timeouts_and_dead_servers() -> None:
    """What must fail does: the first failing command ends the block with its status, a
    block past its limit is stopped (with its children), and a server that exits before
    its serving line fails the block with the server's own error."""
    text = ("```sh\ntrue\n(exit 3)\necho not-reached\n```\n\n"
            "<!-- doc-test: timeout 1 -->\n```sh\nsleep 30 &\nsleep 30\n```\n\n"
            "```sh\n.venv/bin/datamover target serve --portal 127.0.0.1:3260 "
            "--iqn iqn.2026-11.org.example:h --lun /no/such/dir/x.img,size=1M\n```\n")
    failing, slow, dead = parse_blocks(Path("f.md"), text)
    session = DocSession("f.md")
    try:
        result = session.run(failing)
        assert result.returncode == 3 and "not-reached" not in result.stdout
        result = session.run(slow)
        assert result.returncode == -1 and result.seconds < 10
        assert "ran past its 1 s limit" in result.stderr
        result = session.run(dead)
        assert result.returncode == 1
        assert "exited before printing" in result.stderr and "does not exist" in result.stderr
    finally:
        session.close()


def test_programs_are_the_first_words_of_commands() -> None:
    script = ("FOO=1 sudo tgtd -f &\nif true; then iscsi-ls iscsi://x | grep -c lun && echo ok; fi\n"
              ".venv/bin/datamover plugins > out.txt 2>&1\ncat > a <<'EOF'\nnot-a-command here\nEOF\n"
              "tshark -r x.pcap \\\n    -Y iscsi  # comment: notrun\n")
    assert programs(script) == ["tgtd", "iscsi-ls", "grep", "cat", "tshark"]
    assert programs("python3 -c '\nimport json\nprint(1)\n' && ls\n") == ["python3", "ls"]


def test_automatic_skips_name_the_reason() -> None:
    assert "installs software" in (automatic_skip("apt-get install -y tgt\n") or "")
    assert "boots QEMU guests" in (automatic_skip("lab/run.sh --scenarios ci\n") or "")
    assert automatic_skip(".venv/bin/datamover plugins\n") is None
