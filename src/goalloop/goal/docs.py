"""The goal models' attribute docstrings: what each key takes, as `goalloop schema` describes it and the
fixes of mistakes.py quote it.

They are read from the source only when one of those asks: pydantic's `use_attribute_docstrings` reads them
as each model is built, parsing its module once a class, which was a third of what loading the models cost
every command (`validate` included) that never shows one.
"""

from __future__ import annotations

import ast
import inspect
import sys
from typing import Any

MODELS: list[Any] = []
"""Every goal model, in the order pydantic completed them: a model after the models its fields hold."""
_described = False
_rebuilt = False


def describe_fields() -> None:
    """Give every goal model's fields their docstrings as descriptions (pydantic's rules: the docstring
    right under the field in the class that declares it; an explicit `Field(description=...)` wins)."""
    global _described
    if _described:
        return
    trees: dict[str, dict[str, ast.ClassDef]] = {}
    for model in MODELS:
        for name, field in model.model_fields.items():
            owner = next((c for c in model.__mro__ if name in c.__dict__.get("__annotations__", {})), None)
            if field.description is None and owner is not None:
                field.description = _docstrings(owner, trees).get(name)
    _described = True


def rebuild_described() -> None:
    """Rebuild every goal model with its descriptions, for the JSON schema (pydantic builds a model's schema,
    descriptions included, once, when the class is made)."""
    global _rebuilt
    describe_fields()
    if not _rebuilt:
        for model in MODELS:
            model.model_rebuild(force=True)
        _rebuilt = True


def _docstrings(cls: type, trees: dict[str, dict[str, ast.ClassDef]]) -> dict[str, str]:
    """{field: docstring} of the fields `cls` declares, read from its module's source."""
    module = cls.__module__
    if module not in trees:
        tree = ast.parse(inspect.getsource(sys.modules[module]))
        trees[module] = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = trees[module].get(cls.__qualname__)
    found: dict[str, str] = {}
    if node is None:
        return found
    for statement, after in zip(node.body, node.body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            found[statement.target.id] = inspect.cleandoc(after.value.value)
    return found
