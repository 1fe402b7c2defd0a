"""Strict scalars: what YAML reads loosely, and a goal must not take.

YAML reads `true`, `yes` and `on` as true, which pydantic would then take as the number 1; `.nan` and `.inf`
as numbers; `2026-12-01` as a date and `7:30` as the number 450; and double-quoted escapes can put a NUL, a
control character or half of a surrogate pair into any text. `strict_mistakes` walks the loaded YAML against
the models, so every key (new ones included) gets these rules, and names each offence at its key.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from goalloop.goal import docs

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

Found = tuple[tuple[Any, ...], str, str]
"""(where, what is wrong, the fix) for one mistake."""



class StrictModel(BaseModel):
    """The base of every goal model: unknown keys are errors, and so are NaN and infinities where a number
    goes (the YAML-level rules are `strict_mistakes` below). Its fields' docstrings are their descriptions
    once docs.describe_fields has read them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        docs.MODELS.append(cls)


def strict_mistakes(data: Any, model: type[BaseModel], line_text: Any = None) -> list[Found]:
    """Every strictness mistake in `data` (the loaded YAML) read as `model`. `line_text(loc)` gives the raw
    text of the line holding `loc`, for fixes that quote what was written."""
    found: list[Found] = []
    _walk(data, model, (), found, line_text or (lambda loc: ""))
    return found


def _walk(value: Any, expected: Any, loc: tuple[Any, ...], found: list[Found], line_text: Any, env: bool = False) -> None:
    expected = _branch(expected, value)
    if isinstance(value, dict):
        model = expected if _is_model(expected) else None
        for key, item in value.items():
            if isinstance(key, str):
                _text(key, loc + (key,), found, key=True)
                if env and not ENV_NAME.fullmatch(key) and not _CONTROL.search(key):
                    found.append(_bad_env_name(key, loc + (key,)))
            if model is not None:
                field = model.model_fields.get(key) or next(
                    (f for f in model.model_fields.values() if f.alias == key), None)
                name = key if isinstance(key, str) else ""
                child = field.annotation if field is not None else Any
                _walk(item, child, loc + (key,), found, line_text, env=_is_env(name, child))
            else:
                _walk(item, _item_type(expected), loc + (key,), found, line_text)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, _item_type(expected), loc + (index,), found, line_text, env=env and isinstance(item, str))
            if env and isinstance(item, str) and not ENV_NAME.fullmatch(item) and not _CONTROL.search(item):
                found.append(_bad_env_name(item, loc + (index,)))
    elif isinstance(value, str):
        _text(value, loc, found)
    else:
        _scalar(value, expected, loc, found, line_text)


def _text(text: str, loc: tuple[Any, ...], found: list[Found], key: bool = False) -> None:
    what = "this key" if key else "the text"
    surrogate = _SURROGATE.search(text)
    if surrogate:
        code = f"\\u{ord(surrogate.group()):04X}"
        found.append((loc, f"{what} holds a lone surrogate ({code}), half of a character, which is not text",
                      f"remove the {code} escape, or write the character itself (a goal file is UTF-8)"))
        return
    control = _CONTROL.search(text)
    if control:
        char = control.group()
        name = "NUL" if char == "\0" else unicodedata.name(char, "") or {
            "\x1b": "ESC", "\r": "CARRIAGE RETURN", "\x7f": "DELETE"}.get(char, f"U+{ord(char):04X}")
        where = "; no command, variable or path can hold one" if char == "\0" else ""
        found.append((loc, f"{what} holds the control character {name} (\\x{ord(char):02x}){where}",
                      "remove it: a goal file's text is printable, with tabs and line breaks at most"))


def _scalar(value: Any, expected: Any, loc: tuple[Any, ...], found: list[Found], line_text: Any) -> None:
    accepts = _accepted(expected)
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
    if not accepts or accepts & {"any", "parsed"}:
        return
    if isinstance(value, bool) and "bool" not in accepts and accepts & {"int", "float"}:
        written = "true" if value else "false"
        found.append((loc, f"{written} is not a number (YAML reads true, yes and on as true, false, no and off "
                      "as false)", f"write {name}: and a number in digits, such as {name}: 1"))
    elif isinstance(value, float) and not math.isfinite(value) and accepts & {"int", "float"}:
        shown = "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
        found.append((loc, f"{shown} is not a finite number", f"write {name}: and a finite number, such as {name}: 0.01"))
    elif isinstance(value, (date, int, float)) and not isinstance(value, bool) and accepts == {"str"}:
        found.append((loc, *_text_read_as_other(value, name, line_text(loc))))


def _text_read_as_other(value: Any, name: str, line: str) -> tuple[str, str]:
    """A value meant as text that YAML read as a date or a number: what it read, and the quoted fix."""
    raw = re.search(rf"{re.escape(name)}\s*:\s*(\S+)", line)
    written = raw.group(1) if raw else str(value)
    if isinstance(value, datetime):
        return (f"{written} was read as a date and time; it takes text",
                f'put it in quotes: {name}: "{value.isoformat(timespec="minutes")}"')
    if isinstance(value, date):
        if name == "deadline":
            return (f"{written} is a date without a time of day",
                    f'write the date and the time of day in quotes: {name}: "{value.isoformat()}T07:30"')
        return f"{written} was read as a date; it takes text", f'put it in quotes: {name}: "{written}"'
    clock = re.fullmatch(r"(\d+)((?::\d+)+)", written)
    if clock:
        quoted = f"{int(clock.group(1)):02d}{clock.group(2)}" if name == "deadline" else written
        return (f"{written} was read as the number {value} (YAML reads digits:digits as minutes and seconds)",
                f'put it in quotes: {name}: "{quoted}"')
    return f"{written} is a number, but it takes text", f'put it in quotes: {name}: "{written}"'


def _bad_env_name(name: str, loc: tuple[Any, ...]) -> Found:
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    fixed = f"_{fixed}" if fixed[:1].isdigit() else fixed
    return (loc, f"'{name}' is not an environment variable name (letters, digits and _, not starting with a digit)",
            f"rename it to {fixed}" if fixed.strip("_") else "give the variable a name such as MY_SETTING")


# -- the schema, as far as the walk needs it ------------------------------------------------------------------
def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_env(name: str, annotation: Any) -> bool:
    """Keys that hold environment variables (their names are checked): env, env_per_slot, env.pass ..."""
    return (name == "env" or name.startswith("env_") or name == "pass") and not _is_model(_plain(annotation))


def _plain(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _options(annotation: Any) -> list[Any]:
    annotation = _plain(annotation)
    if get_origin(annotation) in (Union, UnionType):
        return [o for arg in get_args(annotation) for o in _options(arg)]
    return [annotation]


def _branch(annotation: Any, value: Any) -> Any:
    """A union of models (the proposer kinds) narrowed to the one `value`'s kind names; else unchanged."""
    options = [o for o in _options(annotation) if o is not type(None)]
    models = [o for o in options if _is_model(o)]
    if len(models) > 1 and isinstance(value, dict):
        for model in models:
            field = model.model_fields.get("kind")
            if field is not None and value.get("kind") in get_args(field.annotation):
                return model
        return Any
    if len(models) == 1 and isinstance(value, dict):
        return models[0]
    return annotation


def _item_type(annotation: Any) -> Any:
    for option in _options(annotation):
        if get_origin(option) in (list, dict):
            return get_args(option)[-1] if get_args(option) else Any
    return Any


def _accepted(annotation: Any) -> set[str]:
    """Which scalar kinds a key takes: int, float, bool, str; `parsed` when a validator reads the value first
    (durations, sums of money), `any` when anything goes."""
    kinds: set[str] = set()
    if get_origin(annotation) is Annotated and any(
        type(m).__name__ == "BeforeValidator" for m in get_args(annotation)[1:]
    ):
        return {"parsed"}
    for option in _options(annotation):
        if option is Any:
            kinds.add("any")
        elif get_origin(option) is Literal:
            kinds.update(type(v).__name__ for v in get_args(option))
        elif option in (int, float, bool, str):
            kinds.add(option.__name__)
    for arg in get_args(_plain(annotation)):
        if get_origin(arg) is Annotated and any(type(m).__name__ == "BeforeValidator" for m in get_args(arg)[1:]):
            kinds.add("parsed")
    return kinds
