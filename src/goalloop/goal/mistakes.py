"""Turning YAML syntax errors and pydantic validation errors into file:line, a message and a fix.

An unknown key gets a "did you mean" for near misses; a wrong value, what the key takes.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from goalloop.errors import GoalError
from goalloop.goal.docs import describe_fields
from goalloop.goal.model import Goal, _bad_name, _key_path
from goalloop.goal.values import Mistake, _show


# -- reading YAML errors ------------------------------------------------------------------------------------
def _yaml_error(exc: yaml.MarkedYAMLError, text: str, source: Path) -> GoalError:
    """A YAML syntax error as one message at the line the person has to change."""
    problem, context = exc.problem or str(exc), exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    text_lines = text.splitlines()
    if mark is not None and exc.context_mark is not None and (
        "end of stream" in problem
        or (context.startswith("while parsing a flow") and _unbalanced(_line(text_lines, exc.context_mark.line)))
    ):
        mark = exc.context_mark  # an unclosed quote or bracket: point at where it opens
    index = mark.line if mark is not None else 0
    here, column = _line(text_lines, index), mark.column if mark is not None else 0
    message, fix = f"this is not valid YAML: {problem}", "check the indentation and quoting on this line"
    if "'\\t'" in problem:
        message = "a tab character: YAML does not allow tabs for indentation"
        fix = "replace the tab with spaces (two per level, like the lines around it)"
    elif "end of stream" in problem and "quoted" in context:
        quote = here[exc.context_mark.column] if exc.context_mark and exc.context_mark.column < len(here) else '"'
        message = f"the {quote} opened on this line is never closed"
        fix = (
            f"end the text with a matching {quote}; for text of several lines write `key: |` "
            "and indent the lines below it"
        )
    elif context.startswith("while parsing a flow") and _unbalanced(here):
        opener = "{" if "mapping" in context else "["
        message = f"the {opener} opened on this line is never closed"
        fix = f"close it with {'}' if opener == '{' else ']'} on the same line, with commas between the items"
    elif "escape character" in problem:
        message = f"{problem} inside double quotes (a backslash starts an escape there)"
        fix = f"use single quotes, where a backslash stays a backslash: {_requoted(here, single=True)}"
    elif "constructor for the tag" in problem:
        message = "a value starting with ! is read as a YAML tag"
        fix = f"put it in quotes: {_requoted(here)}"
    elif "unhashable key" in problem:
        message = "a key here is a list or a mapping (a line starting with '? ', or brackets before the colon)"
        fix = "write `key: value` with a plain word as the key"
    elif "while scanning an alias" in context or "undefined alias" in problem:
        start = exc.context_mark.column if "alias" in context and exc.context_mark else column
        message = "a value starting with * is read as a YAML alias"
        fix = f"put it in quotes: {_quote_at(here, start)}"
    elif "cannot start any token" in problem:
        char = here[column] if column < len(here) else "this character"
        message = f"a value cannot start with {char} unless it is quoted"
        fix = f"put it in quotes: {_quote_at(here, column)}"
    elif "mapping values are not allowed" in problem:
        message, fix, index = _stray_colon(text_lines, index, column)
    elif "expected <block end>" in problem:
        message = "this line is indented differently from the keys above it in the same block"
        fix = "indent keys of one block by the same number of spaces (a top-level key starts at the left margin)"
    elif "single document" in context:
        message = "the file holds more than one YAML document (a second '---' line)"
        fix = "delete this '---' line and keep one goal per file"
    return GoalError(f"{source}:{index + 1}: {message}", fix=fix)


def _line(text_lines: list[str], index: int) -> str:
    return text_lines[index] if 0 <= index < len(text_lines) else ""


def _unbalanced(line: str) -> bool:
    return line.count("{") > line.count("}") or line.count("[") > line.count("]")


def _requoted(line: str, single: bool = False) -> str:
    """`key: value` -> `key: "value"` (or single-quoted), for a fix line."""
    match = re.match(r"\s*(-\s+)?([^\s:#][^:#]*?):\s+(.*?)\s*$", line)
    if not match:
        return '"…"'
    key, value = match.group(2), match.group(3)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if single or '"' in value:
        return f"{key}: '" + value.replace("'", "''") + "'"
    return f'{key}: "' + value.replace("\\", "\\\\") + '"'


def _quote_at(line: str, column: int) -> str:
    """`line` with the value that starts at `column` in double quotes (up to `,`, `]` or `}` inside brackets)."""
    in_brackets = _unbalanced(line[:column])
    end = next((i for i in range(column, len(line)) if in_brackets and line[i] in ",]}"), len(line))
    value = line[column:end].rstrip()
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (line[:column] + quoted + line[column + len(value):]).strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _stray_colon(text_lines: list[str], index: int, column: int) -> tuple[str, str, int]:
    """Why YAML found a ': ' it did not expect: a colon inside a value, a key indented too far, or a line
    above that is not `key: value` (so YAML read it and this line as one long text)."""
    here = _line(text_lines, index)
    if ": " in here[:column].lstrip():
        return (
            "this value holds ': ', which YAML reads as the start of another key",
            f"put the value in quotes: {_requoted(here)}",
            index,
        )
    filled = [i for i in range(index) if text_lines[i].strip() and not text_lines[i].lstrip().startswith("#")]
    above = filled[-1] if filled else None
    if above is None:
        return "this is not valid YAML: a ':' where none was expected", "write `key: value`, one per line", index
    previous = text_lines[above]
    if _indent(here) > _indent(previous) and re.match(r"\s*(-\s+)?[^:#]+:\s+\S", previous):
        key = previous.strip().split(":")[0].lstrip("- ")
        return (
            f"this key is indented deeper than {key}: above it, so YAML reads it as part of {key}'s value",
            f"indent it by {_indent(previous)} spaces, like {key}:",
            index,
        )
    if not re.match(r"\s*(-\s+)?[^:#]*:(\s|$)", previous):
        content = previous.strip()
        guess = re.sub(r":(?=\S)", ": ", content, count=1) if ":" in content else re.sub(r"^(\S+)\s+", r"\1: ", content)
        return (
            "this line is not `key: value`: a key needs a colon and a space after it",
            f"write {guess}" if guess != content else "write `key: value`",
            above,
        )
    return (
        "this is not valid YAML: a ':' where none was expected",
        "put a value holding ': ' in quotes, and indent the keys of one block by the same number of spaces",
        index,
    )



# -- explaining validation errors ---------------------------------------------------------------------------
_PROPOSER_KINDS = {
    "claude-code": "Claude Code, the claude CLI",
    "codex": "OpenAI's Codex CLI",
    "aider": "Aider",
    "command": "any other agent CLI or script",
    "claude": "Claude through the API",
    "search": "a numeric search over knobs",
    "scripted": "a list of prepared changes",
}
_AGENT_CLI_WORDS = ("code", "codex", "aider", "cursor", "gemini", "agent", "cli")
_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()
)} | {"thirty": 30, "forty": 40, "fifty": 50, "hundred": 100}
_EXAMPLES = {
    ("check", "run"): "python3 -m pytest -q",
    ("proposer", "run"): 'my-agent < "$GOALLOOP_PROMPT_FILE" (Claude Code, Codex, Aider: use kind: claude-code, codex or aider)',
}
_MISSING_FIX = {
    ("check",): "add `check:` and below it, indented, `run:` with the command that tells whether the goal is met, "
    "such as run: python3 -m pytest -q",
    ("check", "run"): "add `run:` under check: with the shell command to run, such as run: python3 -m pytest -q",
    ("proposer",): "add a proposer: `proposer:` and below it, indented, `kind: claude-code` (or codex, aider, "
    "claude, search, scripted, or kind: command with `run: <your agent's command>`)",
    ("proposer", "run"): "add `run:` under proposer: with the agent's command, the prompt on its stdin, such as "
    'run: my-agent < "$GOALLOOP_PROMPT_FILE" (for Claude Code, Codex or Aider, kind: claude-code, codex or aider '
    "need no run:)",
    ("proposer", "steps"): "add `steps:` under proposer: with a list of changes, each `- files: {path: content}`",
    ("proposer", "params"): "add `params:` under proposer: with the knobs to search, such as "
    "lr: {file: train.py, pattern: 'LR = ([0-9.e-]+)', low: 1.0e-4, high: 0.1}",
}


def _plain(annotation: Any) -> Any:
    """Unwrap Annotated[...] and `X | None` down to X (a union of models stays a union)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _schema_at(loc: tuple[Any, ...]) -> tuple[Any, FieldInfo | None, tuple[Any, ...]]:
    """For pydantic's `loc`: the type expected there, the field it belongs to (if any), and the loc as the
    user sees it, without the labels pydantic adds for the branches of a union (`command`, `float`, ...)."""
    current: Any = Goal
    field: FieldInfo | None = None
    user: tuple[Any, ...] = ()
    for part in loc:
        current = _plain(current)
        if get_origin(current) in (list, dict):
            current = get_args(current)[-1]  # `part` is an index or a key
            field = None
        elif get_origin(current) in (Union, UnionType):  # `part` names a branch: a proposer kind, `float`, ...
            branches = get_args(current)
            current = next((m for m in branches if _is_model(m) and _kind_tag(m) == part), None) or next(
                (t for t in branches if isinstance(t, type) and str(part).split("-")[-1] == t.__name__), current
            )
            continue
        elif _is_model(current):
            field = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
            current = field.annotation if field is not None else None
        else:
            current = field = None
        user += (part,)
    return _plain(current), field, user


def _kind_tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return get_args(field.annotation)[0] if field is not None and get_args(field.annotation) else None


def _keys_of(model: Any) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()] if _is_model(model) else []


def _describe(error: dict[str, Any], lines: dict[tuple[Any, ...], int]) -> tuple[int, str, str]:
    """(line, message, fix) for one pydantic error."""
    raw_loc, kind, got = tuple(error["loc"]), error["type"], error.get("input")
    expected, field, loc = _schema_at(raw_loc)
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
    problem = (error.get("ctx") or {}).get("error")
    message = error["msg"].removeprefix("Value error, ")
    fix = _takes(name, field)
    if isinstance(problem, Mistake) and loc and loc[-1] == "[key]":  # a key its validator refused (a path)
        loc = loc[:-1]
    elif kind == "invalid_key" or (loc and loc[-1] == "[key]"):  # a key that YAML read as a number, true, a date
        loc = loc[:-1] if loc[-1] == "[key]" else loc
        key = got if kind == "invalid_key" else loc[-1]
        line = next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)
        yes_no = " (YAML reads yes, no, on and off as true or false)" if isinstance(key, bool) else ""
        where = f"{_key_path(loc[:-1])}: " if loc[:-1] else ""
        return line, f"{where}the key {_show(key)} is not text{yes_no}", (
            "put the key in quotes, as in \"name\": value, or remove it if it is not meant to be there"
        )
    if isinstance(problem, Mistake):
        loc = loc + problem.at
        message, fix = problem.message, problem.fix
    elif kind == "extra_forbidden":
        allowed = _keys_of(_schema_at(raw_loc[:-1])[0])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        message = f"unknown key '{loc[-1]}'"
        fix = f"did you mean '{close[0]}'?" if close else f"remove it; the keys allowed here are: {', '.join(allowed)}"
    elif kind == "missing":
        message = "this required key is missing"
        doc = f" ({field.description.rstrip('.')})" if field is not None and field.description else ""
        parent = _key_path(loc[:-1])
        fix = _MISSING_FIX.get(loc) or f"add `{name}:`{f' under {parent}:' if parent else ''}{doc}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        message, fix = _proposer_kind(kind, got)
        loc = loc + ("kind",) if kind == "union_tag_invalid" else loc
    elif kind in ("value_error", "assertion_error"):
        pass  # a validator's own words; the fix is what the key takes
    elif _is_model(expected) or (
        get_origin(expected) in (Union, UnionType) and any(_is_model(m) for m in get_args(expected))
    ):
        message, fix = _not_a_mapping(name, got, expected)
    else:
        message, fix = _wrong_value(kind, error, name, got, expected, field)
    line = next((lines[loc[:d]] for d in range(len(loc), -1, -1) if loc[:d] in lines), 1)
    key = _key_path(loc)
    return line, f"{key}: {message}" if key else message, fix


def _takes(name: str, field: FieldInfo | None) -> str:
    """What a key takes, from its docstring: the fix when nothing more precise is known."""
    if field is None or not field.description:
        return f"see GOAL_TEMPLATE.md for what {name}: takes"
    text = " ".join(field.description.split()).rstrip(".")
    return f"{name}: takes {text[0].lower()}{text[1:]} (see GOAL_TEMPLATE.md)"


def _describe_all(errors: list[dict[str, Any]], lines: dict[tuple[Any, ...], int]) -> list[tuple[int, str, str]]:
    """(line, message, fix) for each mistake, in file order. The errors pydantic gives for each branch of a
    union (`float`, `str`) are one mistake: the value fits none of them."""
    describe_fields()  # the fixes quote what a key takes
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in errors:
        by_key.setdefault(_schema_at(tuple(error["loc"]))[2], []).append(error)
    found = set()
    for loc, group in by_key.items():
        if len(group) > 1 and loc and all(e["type"] not in ("missing", "extra_forbidden") for e in group):
            line, _, _ = _describe(group[0], lines)
            field = _schema_at(tuple(group[0]["loc"]))[1]
            name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
            message = f"{_key_path(loc)}: {_show(group[0].get('input'))} is not a value it takes"
            found.add((line, message, _takes(name, field)))
        else:
            found.update(_describe(error, lines) for error in group)
    return sorted(found, key=lambda item: item[0])


def _proposer_kind(kind: str, got: Any) -> tuple[str, str]:
    kinds = "; ".join(f"{k} ({why})" for k, why in _PROPOSER_KINDS.items())
    if kind == "union_tag_not_found":
        return "kind: is missing", f"add `kind:` under proposer:, one of: {kinds}"
    tag = str(got.get("kind") if isinstance(got, dict) else got)
    close = difflib.get_close_matches(tag, list(_PROPOSER_KINDS), n=1, cutoff=0.6)
    if not close and any(word in tag.lower() for word in _AGENT_CLI_WORDS):
        return (
            f"'{tag}' is not a kind of proposer",
            "Claude Code, Codex and Aider are kind: claude-code, codex and aider; any other agent CLI runs as "
            'kind: command, with its command line under run:, the prompt on its stdin: run: my-agent < "$GOALLOOP_PROMPT_FILE"',
        )
    return (
        f"'{tag}' is not a kind of proposer",
        f"did you mean '{close[0]}'? (kinds: {', '.join(_PROPOSER_KINDS)})" if close else f"write one of: {kinds}",
    )


def _not_a_mapping(name: str, got: Any, expected: Any) -> tuple[str, str]:
    """A key that holds keys of its own (check:, budget:, proposer: ...) was given something else."""
    models = [m for m in get_args(expected) if _is_model(m)] if not _is_model(expected) else [expected]
    keys = list(dict.fromkeys(k for m in models for k in _keys_of(m)))
    shown = ", ".join(f"{k}:" for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
    if len(models) > 1:
        shown = "kind: and that kind's keys"
    below = f"write `{name}:` alone on its line and its keys indented below it"
    if got is None:
        return f"is empty; it takes keys of its own ({shown})", below
    if isinstance(got, list):
        return (
            f"is a list (its lines start with '- '), but it takes keys ({shown})",
            f"remove the '- ' in front of the keys under {name}: and keep them indented",
        )
    if isinstance(got, str) and name == "proposer" and got in _PROPOSER_KINDS:
        return f"is the text {_show(got)}, but it takes keys ({shown})", f"{below}: `kind: {got}` and that kind's keys"
    if isinstance(got, str) and "run" in keys:
        return f"is the text {_show(got)}, but it takes keys ({shown})", f"{below}: `run: {got}`"
    return f"is {_show(got)}, but it takes keys ({shown})", below


def _wrong_value(
    kind: str, error: dict[str, Any], name: str, got: Any, expected: Any, field: FieldInfo | None
) -> tuple[str, str]:
    """A value of the wrong type, out of range, or not one of the allowed words."""
    ctx = error.get("ctx") or {}
    default = field.default if field is not None and field.default not in (None, PydanticUndefined) else None
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(got), allowed, n=1, cutoff=0.6)
        return (
            f"{_show(got)} is not one of: {', '.join(allowed)}",
            f"did you mean '{close[0]}'? write {name}: {close[0]}" if close else f"write one of: {', '.join(allowed)}",
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = next(ctx[k] for k in ("ge", "gt", "le", "lt") if k in ctx)
        bound = {"greater_than_equal": "at least", "greater_than": "more than",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        example = f", such as {name}: {default}" if default is not None else ""
        return f"{_show(got)} is out of range: it must be {bound} {limit}", f"write a number {bound} {limit}{example}"
    if kind in ("too_short", "string_too_short"):
        what = "the shell command" if name == "run" else "at least one item" if kind == "too_short" else "a value"
        return "is empty", f"write {what} after {name}:" if kind == "string_too_short" else f"list {what} under {name}:"
    if kind == "string_pattern_mismatch" and name == "name":
        return _bad_name(str(got))
    if got is None and error["loc"] and isinstance(error["loc"][-1], int):
        return "this list item is empty", "write a value after the '- ', or delete the line"
    if got is None:
        example = _EXAMPLES.get(_schema_at(tuple(error["loc"]))[2], "")
        if field is not None and not field.is_required():
            return "has no value after the colon", f"write a value after {name}:, or delete the line to use the default"
        if example:
            return "has no value after the colon", f"write the command after {name}:, such as {name}: {example}"
        return "has no value after the colon", f"write a value after {name}:"
    if kind in ("list_type", "dict_type") or get_origin(expected) in (list, dict):
        if get_origin(expected) is dict or kind == "dict_type":
            return (
                f"is {_show(got)}, but it takes `key: value` pairs",
                f"write the pairs indented under {name}:, one per line",
            )
        item = json.dumps(got) if isinstance(got, str) else "…" if isinstance(got, (list, dict)) else _show(got)
        return f"is {_show(got)}, but it takes a list", f"write a list in brackets: {name}: [{item}]"
    want = _TYPE_WORDS.get(expected, "a value of another kind")
    if expected is str:
        written = f'"{_show(got) if isinstance(got, bool) else got}"'
        return (
            f"is {_show(got)}, but it takes text",
            f"put it in quotes: {f'{name}: ' if error['loc'] and error['loc'][-1] == name else ''}{written}"
            if not isinstance(got, (list, dict))
            else f"write text after {name}:",
        )
    if expected in (int, float):
        words = str(got).strip().lower() if isinstance(got, str) else ""
        number = _NUMBER_WORDS.get(words)
        if number is None:
            digits = re.fullmatch(r"\s*([-+]?\d+(?:\.\d+)?)\s*\S*.*", words) if words else None
            number = digits.group(1) if digits else None
        if kind == "int_from_float":
            number = round(float(got))
        example = number if number is not None else default if default is not None else 1 if expected is int else 0.5
        return (
            f"{_show(got)} is not {want}",
            f"write {name}: {example} ({want}{', no units or % sign' if expected is float else ', in digits'})",
        )
    if expected is bool:
        return f"{_show(got)} is not true or false", f"write {name}: true or {name}: false"
    return f"{_show(got)}: {error['msg']}", _takes(name, field)
