"""Reading a goal file: YAML that refuses duplicate keys, the line of every key, then the models.

Every mistake is reported as a GoalError naming the file, the line and the fix. What is read is bounded
before it is parsed: the file's size (MAX_GOAL_BYTES; only a regular file is opened, so a FIFO or /dev/zero
named as the goal never hangs), how deep its blocks nest (MAX_DEPTH) and how many values its YAML aliases
expand to (MAX_VALUES, against "billion laughs" anchor bombs), and how many digits a number has. These are
checked on the parser's event stream, which needs neither recursion nor the expanded document.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from goalloop.errors import GoalError
from goalloop.goal.mistakes import _describe_all, _yaml_error
from goalloop.goal.model import Goal, _key_path
from goalloop.goal.strict import strict_mistakes

MAX_GOAL_BYTES = 1 << 20
"""The largest goal file goalloop reads (1 MiB); real ones are a few KiB."""
MAX_DEPTH = 50
"""How deep mappings and lists may nest; a goal file needs about 6."""
MAX_VALUES = 100_000
"""How many values the file may hold once its aliases are expanded."""
MAX_DIGITS = 300
_INTEGER = re.compile(r"[-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])*)")


# -- reading the YAML ---------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _plain_key(text: str) -> Any:
    """An unquoted key as YAML reads it: `3` -> 3, `on` -> True."""
    try:
        key = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return key if isinstance(key, (str, int, float, bool, type(None))) else text


def _line_map(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    source: Path,
    within: frozenset[int] = frozenset(),
) -> None:
    """Record the 1-based line of every key and list item; refuse a key given twice, and an alias inside itself."""
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in within:
        raise GoalError(
            f"{source}:{lines[path]}: {_key_path(path)}: a YAML alias (*name) here refers to a block that contains it",
            fix="write the keys out instead of the alias",
        )
    within = within | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise GoalError(
                    f"{source}:{line}: {_key_path(path + (key,))}: this key appears twice (first on line {seen[key]})",
                    fix="keep one of them and merge what it holds; YAML would silently drop the first",
                )
            seen[key] = line
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:str" and not key_node.style:
                key = _plain_key(key_node.value)  # `3:` is the number 3, `on:` is true
            lines[path + (key,)] = line
            _line_map(value_node, path + (key,), lines, source, within)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines, source, within)


def _check_bounds(text: str, source: Path) -> None:
    """Refuse, at its line, nesting deeper than MAX_DEPTH, aliases expanding past MAX_VALUES values and
    numbers of more than MAX_DIGITS digits, from the parser's events (syntax errors are left to the loader)."""
    opened: list[tuple[str | None, int]] = []  # (anchor, values counted when it opened) per open block
    sizes: dict[str, int] = {}
    values = 0
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            if isinstance(event, yaml.CollectionStartEvent):
                values += 1
                opened.append((event.anchor, values))
                if len(opened) > MAX_DEPTH:
                    raise GoalError(
                        f"{source}:{line}: blocks are nested more than {MAX_DEPTH} deep here",
                        fix="a goal file needs a handful of levels (check: run:); remove the extra brackets or indentation",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, start = opened.pop()
                if anchor is not None:
                    sizes[anchor] = values - start + 1
            elif isinstance(event, yaml.ScalarEvent):
                values += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                if event.implicit[0] and len(event.value) > MAX_DIGITS and _INTEGER.fullmatch(event.value):
                    raise GoalError(f"{source}:{line}: a number of {len(event.value):,} digits",
                                    fix="write a number of at most 18 digits")
            elif isinstance(event, yaml.AliasEvent):
                values += sizes.get(event.anchor, 1)
            if values > MAX_VALUES:
                raise GoalError(
                    f"{source}:{line}: YAML aliases (*name) here expand the file past {MAX_VALUES:,} values "
                    "(an anchor bomb?)",
                    fix="write the values out instead of through anchors (&name) and aliases (*name)",
                )
    except yaml.MarkedYAMLError as exc:  # syntax errors are the loader's to explain; libyaml's own depth cap is ours
        if "nesting depth" in str(exc.problem):
            line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
            raise GoalError(f"{source}:{line}: blocks are nested more than {MAX_DEPTH} deep here",
                            fix="a goal file needs a handful of levels (check: run:); remove the extra brackets") from None
    except (yaml.YAMLError, RecursionError):
        return


def _reader_error(exc: yaml.reader.ReaderError, text: str, source: Path) -> GoalError:
    """A character YAML refuses (a control character, NUL) at the line that holds it."""
    line = text[: exc.position].count("\n") + 1
    code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
    name = {0: "NUL", 7: "BEL", 8: "BACKSPACE", 0x1B: "ESC", 0x7F: "DELETE"}.get(code, f"U+{code:04X}")
    return GoalError(f"{source}:{line}: a control character ({name}, #x{code:04x}) that YAML does not allow in a file",
                     fix="delete it: a goal file is plain text (tabs and line breaks at most)")


def parse_goal(text: str, source: Path) -> Goal:
    """Parse goal YAML `text` (read from `source`), raising GoalError with file:line on any mistake."""
    if len(text) > MAX_GOAL_BYTES:
        raise _too_big(source, text[:MAX_GOAL_BYTES].count("\n") + 1, len(text.encode("utf-8", "replace")))
    try:
        _check_bounds(text, source)
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except yaml.YAMLError as exc:
        raise GoalError(
            f"{source}:1: this is not valid YAML: {exc}", fix="save the goal file as plain UTF-8 text"
        ) from None
    if root is None:
        raise GoalError(
            f"{source}:1: the goal file is empty",
            fix="run `goalloop init` to write a commented starter goal, or copy one from goals/",
        )
    if not isinstance(root, yaml.MappingNode):
        starts_with_dash = isinstance(root, yaml.SequenceNode)
        raise GoalError(
            f"{source}:{root.start_mark.line + 1}: a goal file is a mapping of keys (name:, check:, proposer:, ...)"
            + (", but this one is a list" if starts_with_dash else ""),
            fix="remove the '- ' in front of the top-level keys"
            if starts_with_dash
            else "start from `goalloop init`, which writes a commented starter goal",
        )
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(root, (), lines, source)
    constructor = _UniqueKeyLoader("")
    try:  # the values, from the nodes already composed: the text is not parsed a second time
        data = constructor.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    finally:
        constructor.dispose()
    text_lines = text.splitlines()
    strict = [(_line_of(loc, lines), f"{_key_path(loc)}: {message}" if loc else message, fix)
              for loc, message, fix in strict_mistakes(data, Goal, lambda loc: _text_at(loc, lines, text_lines))]
    try:
        goal = Goal.model_validate(data)
        found: list[tuple[int, str, str]] = []
    except ValidationError as exc:
        found = _describe_all(exc.errors(), lines)
    if strict:  # these first: what pydantic makes of a NUL, a surrogate or a bool taken as 1 only confuses
        found = sorted(strict, key=lambda item: item[0])
    if found:
        raise GoalError(
            "\n".join(f"{source}:{line}: {message}\n  fix: {fix}" for line, message, fix in found[:-1])
            + ("\n" if len(found) > 1 else "")
            + f"{source}:{found[-1][0]}: {found[-1][1]}",
            fix=found[-1][2],
        ) from None
    goal._source = source
    goal._lines = lines
    return goal


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    return next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)


def _text_at(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int], text_lines: list[str]) -> str:
    index = _line_of(loc, lines) - 1
    return text_lines[index] if 0 <= index < len(text_lines) else ""


def _too_big(source: Path, line: int, size: int) -> GoalError:
    return GoalError(
        f"{source}:{line}: the goal file passes {MAX_GOAL_BYTES >> 20} MiB here (it is {size / (1 << 20):.1f} MiB); "
        f"a goal file may be at most {MAX_GOAL_BYTES >> 20} MiB",
        fix="keep long instructions in a file named by instructions_file:, and data out of the goal file",
    )


def read_goal_text(source: Path) -> str:
    """The goal file's text: a regular file of at most MAX_GOAL_BYTES, UTF-8. Raises GoalError."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise GoalError(f"{source}: no such goal file", fix="check the path, or run `goalloop init`") from None
    except OSError as exc:
        raise GoalError(f"{source}: cannot read the goal file: {exc.strerror or exc}", fix="check the path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise GoalError(f"{source}: the goal file is not a regular file (a folder, FIFO or device)",
                            fix="name a YAML file, such as goals/speedup.yaml")
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(MAX_GOAL_BYTES + 1)
    except OSError as exc:
        raise GoalError(f"{source}: cannot read the goal file: {exc.strerror or exc}", fix="check the path") from None
    finally:
        os.close(fd)
    if len(data) > MAX_GOAL_BYTES:
        raise _too_big(source, data[:MAX_GOAL_BYTES].count(b"\n") + 1, max(info.st_size, len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise GoalError(
            f"{source}:{line}: the goal file is not UTF-8 text"
            + (" (it is UTF-16)" if utf16 else f": byte 0x{data[exc.start]:02x} on line {line} is not UTF-8"),
            fix="save it as UTF-8 (in most editors: Save with encoding, UTF-8)",
        ) from None


def load_goal(path: str | Path) -> Goal:
    """Read and validate a goal file. Raises GoalError (exit 2) naming file:line and the fix."""
    source = Path(path)
    text = read_goal_text(source)
    return parse_goal(text, source.resolve() if not source.is_absolute() else source)
