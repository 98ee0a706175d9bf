"""Shell blocks of the documentation: found, parsed, and turned into runnable scripts.

Every fenced block whose info string is ``sh``, ``bash``, ``shell`` or ``console`` in
README.md and docs/*.md is a command block. HTML comments of the form
``<!-- doc-test: DIRECTIVE -->`` on the lines right before the fence (blank lines allowed
in between, nothing else) say how to run it; see tests/docs/README.md for the directives.

This module does no I/O beyond reading the Markdown files, so the parsing and the
rewriting rules (free ports, background servers, /var/tmp) are unit-tested on their own.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

#: info strings that mark a block of commands
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})

_FENCE = re.compile(r"^(?P<indent>\s{0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<(?P<dash>-?)\s*(?P<quote>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)")
_ASSIGNMENT = r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
#: a command line that starts an iSCSI target in the foreground
_SERVE = re.compile(r"^\s*" + _ASSIGNMENT + r"(?:\S*/)?datamover\s+(?:(?:-v|--verbose|--debug)\s+)*target\s+serve\b")
#: HOST:PORT on this machine; every documented port is replaced by a free one
_LOCAL_PORTAL = re.compile(r"(?<![\w.\-])(?P<host>127\.0\.0\.1|localhost|\[::1\]):(?P<port>\d{1,5})(?!\d)")
#: commands that install software: never run by the default test (they would change the
#: machine, need the network, or, for scripts/test.sh, be the test run itself)
_INSTALLERS = re.compile(
    r"(?:^|[\s;&|(])(?:sudo\s+)?(?:apt-get|apt|dpkg\s+-i|scripts/(?:setup|test|compare|install-[\w-]+)\.sh)(?=\s|$|;)",
    re.MULTILINE)

#: what a background server prints once it accepts connections (``datamover target serve``)
SERVE_READY = r"serving .* on [^ ]+:[0-9]+"
DEFAULT_TIMEOUT = 30.0


class DirectiveError(ValueError):
    """A ``doc-test`` comment that cannot be understood (names the file and line)."""


@dataclass(slots=True)
class Directives:
    """How one block is run."""

    skip: str | None = None
    requires: list[str] = field(default_factory=list)
    exit_status: int = 0
    background: bool = False
    ready: str = SERVE_READY
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    expect: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Block:
    """One fenced shell block."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str  # the block body as written
    directives: Directives

    @property
    def ident(self) -> str:
        return f"{self.path.name}:{self.line}"

    def commands(self) -> str:
        """The shell text to run: the body of sh/bash blocks; for console blocks the
        ``$ `` lines with their continuation lines and here-document bodies."""
        if self.language != "console":
            return self.text
        return console_commands(self.text)


# ------------------------------------------------------------------ parsing
def parse_directive(body: str, directives: Directives, where: str) -> None:
    """Apply one ``doc-test:`` comment body to ``directives``."""
    word, _, rest = body.partition(" ")
    rest = rest.strip()
    if word == "skip":
        if not rest:
            raise DirectiveError(f"{where}: 'skip' needs a reason")
        directives.skip = rest
    elif word == "requires":
        items = [item for item in re.split(r"[\s,]+", rest) if item]
        if not items:
            raise DirectiveError(f"{where}: 'requires' needs at least one item")
        directives.requires.extend(items)
    elif word == "exit":
        if not rest.isdigit() or int(rest) > 255:
            raise DirectiveError(f"{where}: 'exit' needs a status 0..255, got {rest!r}")
        directives.exit_status = int(rest)
    elif word == "background":
        directives.background = True
        if rest:
            key, sep, value = rest.partition("=")
            if key != "ready" or not sep or not value:
                raise DirectiveError(f"{where}: 'background' takes only ready=REGEX, got {rest!r}")
            try:
                re.compile(value)
            except re.error as exc:
                raise DirectiveError(f"{where}: bad ready= regex {value!r}: {exc}") from None
            directives.ready = value
    elif word == "env":
        try:
            pairs = shlex.split(rest)
        except ValueError as exc:
            raise DirectiveError(f"{where}: 'env': {exc}") from None
        if not pairs:
            raise DirectiveError(f"{where}: 'env' needs NAME=VALUE pairs")
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise DirectiveError(f"{where}: 'env' expects NAME=VALUE, got {pair!r}")
            directives.env[name] = value
    elif word == "timeout":
        try:
            seconds = float(rest)
        except ValueError:
            raise DirectiveError(f"{where}: 'timeout' needs seconds, got {rest!r}") from None
        if not 0 < seconds <= 600:
            raise DirectiveError(f"{where}: 'timeout' must be in (0, 600], got {rest}")
        directives.timeout = seconds
    elif word == "expect":
        if not rest:
            raise DirectiveError(f"{where}: 'expect' needs the text to look for")
        directives.expect.append(rest)
    else:
        raise DirectiveError(f"{where}: unknown doc-test directive {word!r} "
                             "(known: skip, requires, exit, background, env, timeout, expect)")


def parse_blocks(path: Path, text: str | None = None,
                 languages: frozenset[str] = SHELL_LANGUAGES) -> list[Block]:
    """Every fenced block of one Markdown file in ``languages`` (shell blocks by default),
    with its directives."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, info = match.group("fence"), match.group("info").lower()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = lines[index].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            body.append(lines[index])
            index += 1
        index += 1  # past the closing fence (or the end of an unclosed block)
        if info not in languages:
            continue
        directives = Directives()
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        comments: list[tuple[int, str]] = []
        while above >= 0 and (found := _DIRECTIVE.match(lines[above])):
            comments.append((above + 1, found.group("body")))
            above -= 1
        for number, comment in reversed(comments):
            parse_directive(comment, directives, f"{path.name}:{number}")
        indent = len(match.group("indent"))
        blocks.append(Block(path, start + 1, info, "\n".join(line[indent:] if line[:indent].isspace() else line
                                                            for line in body) + "\n", directives))
    return blocks


def console_commands(text: str) -> str:
    """The commands of a console transcript: ``$ `` lines, their ``\\`` continuations
    (optionally shown with a ``> `` prompt) and here-document bodies; output is dropped."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("$ ") and line != "$":
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and index < len(lines):
            command.append(lines[index].removeprefix("> "))
            index += 1
        out.extend(command)
        for terminator, dash in heredoc_terminators("\n".join(command)):
            while index < len(lines):
                body = lines[index]
                index += 1
                out.append(body)
                if (body.lstrip("\t") if dash else body) == terminator:
                    break
    return "\n".join(out) + "\n"


def heredoc_terminators(line: str) -> list[tuple[str, bool]]:
    """The here-document words a command line opens, in order, with their ``<<-`` flag."""
    return [(m.group("word"), bool(m.group("dash"))) for m in _HEREDOC.finditer(line)]


def logical_lines(script: str) -> list[tuple[int, int, str, bool]]:
    """Split shell text into (first line, last line, text, is_heredoc_body) pieces: command
    lines with their backslash continuations joined, and here-document bodies kept apart
    so that nothing inside them is mistaken for a command."""
    lines = script.splitlines()
    pieces: list[tuple[int, int, str, bool]] = []
    index = 0
    while index < len(lines):
        first = index
        parts = [lines[index]]
        while parts[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            parts.append(lines[index])
        pieces.append((first, index, "\n".join(parts), False))
        index += 1
        for terminator, dash in heredoc_terminators("\n".join(parts)):
            start = index
            while index < len(lines):
                body = lines[index]
                index += 1
                if (body.lstrip("\t") if dash else body) == terminator:
                    break
            pieces.append((start, index - 1, "\n".join(lines[start:index]), True))
    return pieces


# ------------------------------------------------------------------ rewriting
def local_ports(text: str) -> list[int]:
    """Documented ports of local portals (``127.0.0.1:3260``), in order, without 0."""
    seen: list[int] = []
    for match in _LOCAL_PORTAL.finditer(text):
        port = int(match.group("port"))
        if port and port not in seen:
            seen.append(port)
    return seen


def substitute_ports(text: str, mapping: dict[int, int]) -> str:
    """Replace documented local ports by the free ones in ``mapping`` (port 0 stays)."""

    def replace(match: re.Match[str]) -> str:
        port = int(match.group("port"))
        return f"{match.group('host')}:{mapping.get(port, port)}"

    return _LOCAL_PORTAL.sub(replace, text)


def is_serve_command(command: str) -> bool:
    """True for a foreground ``datamover target serve`` command line."""
    return bool(_SERVE.match(command)) and not command.rstrip().endswith("&")


def installs_software(text: str) -> str | None:
    """The first installer command in ``text`` (apt-get, scripts/setup.sh, ...), if any."""
    match = _INSTALLERS.search(text)
    return match.group(0).strip(" ;&|(") if match else None


#: commands the default test never runs, whatever the doc says: they boot virtual machines
#: for minutes (the lab has its own job)
_HEAVY = re.compile(r"(?:^|[\s;&|(])(?:lab/run\.sh|python3?\s+-m\s+lab)(?=\s|$|;)", re.MULTILINE)
_SHELL_WORDS = frozenset({
    "!", ".", ":", "[", "[[", "alias", "break", "case", "cd", "continue", "do", "done", "echo", "elif",
    "else", "esac", "eval", "exec", "exit", "export", "false", "fi", "for", "function", "if", "in",
    "local", "printf", "pwd", "read", "return", "set", "shift", "source", "test", "then", "time",
    "trap", "true", "type", "ulimit", "umask", "unset", "until", "wait", "while", "{", "}",
})
_PREFIXES = frozenset({"sudo", "env", "nohup", "command", "exec", "time"})
#: keywords after which the next word is again a command
_BEFORE_COMMANDS = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{"})


def programs(script: str) -> list[str]:
    """Bare program names a script runs (the first word of each simple command, past
    assignments and prefixes like sudo); paths such as .venv/bin/datamover are left out."""
    found: list[str] = []
    text = "\n".join(piece for _, _, piece, heredoc_body in logical_lines(script) if not heredoc_body)
    # newlines separate commands, except inside quotes (a multi-line python -c '...')
    lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: leave it to bash
        return found
    expect_command = True
    for token in tokens:
        if token and set(token) <= set(";&|()\n"):
            expect_command = True
            continue
        if token and set(token) <= set("<>&"):
            expect_command = False
            continue
        if not expect_command:
            continue
        if (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token, re.DOTALL) or token in _PREFIXES
                or token in _BEFORE_COMMANDS):
            continue  # a command still follows
        expect_command = False
        if token in _SHELL_WORDS or "/" in token or not re.fullmatch(r"[\w.+-]+", token):
            continue
        if token not in found:
            found.append(token)
    return found


def automatic_skip(text: str) -> str | None:
    """Why the default test does not run a block nobody marked: it installs software or
    boots virtual machines."""
    installer = installs_software(text)
    if installer is not None:
        return (f"runs {installer}, which installs software: the default test never installs "
                "(mark the block <!-- doc-test: skip REASON -->)")
    heavy = _HEAVY.search(text)
    if heavy is not None:
        return (f"runs {heavy.group(0).strip(' ;&|(')}, which boots QEMU guests for minutes: "
                "not part of the default test (mark the block <!-- doc-test: skip REASON -->)")
    return None


def collect(root: Path) -> list[Block]:
    """Every command block of README.md and docs/*.md under ``root``."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    blocks: list[Block] = []
    for path in files:
        if path.is_file():
            blocks.extend(parse_blocks(path))
    return blocks
