"""Reading a goal file: YAML that refuses duplicate keys, the line of every key, then the models.

Every mistake is reported as a GoalError naming the file, the line and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from goalloop.errors import GoalError
from goalloop.goal.mistakes import _describe_all, _yaml_error
from goalloop.goal.model import Goal, _key_path


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


def parse_goal(text: str, source: Path) -> Goal:
    """Parse goal YAML `text` (read from `source`), raising GoalError with file:line on any mistake."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
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
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    try:
        goal = Goal.model_validate(data)
    except ValidationError as exc:
        found = _describe_all(exc.errors(), lines)
        raise GoalError(
            "\n".join(f"{source}:{line}: {message}\n  fix: {fix}" for line, message, fix in found[:-1])
            + ("\n" if len(found) > 1 else "")
            + f"{source}:{found[-1][0]}: {found[-1][1]}",
            fix=found[-1][2],
        ) from None
    goal._source = source
    goal._lines = lines
    return goal


def load_goal(path: str | Path) -> Goal:
    """Read and validate a goal file. Raises GoalError (exit 2) naming file:line and the fix."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoalError(f"{source}: no such goal file", fix="check the path, or run `goalloop init`") from None
    except UnicodeDecodeError as exc:
        line = source.read_bytes()[: exc.start].count(b"\n") + 1
        raise GoalError(f"{source}:{line}: the goal file is not UTF-8 text", fix="save it as UTF-8") from None
    except OSError as exc:
        raise GoalError(f"{source}: cannot read the goal file: {exc.strerror or exc}", fix="check the path") from None
    return parse_goal(text, source.resolve() if not source.is_absolute() else source)
