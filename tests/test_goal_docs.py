"""The goal keys' docstrings, read only when a mistake or the schema needs them, still say what a key takes:
in the fix of a mistake, and in `goalloop schema` (tests/test_cli_outputs.py compares that with the committed
goals/goal.schema.json, which pydantic wrote from the same docstrings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from goalloop.errors import GoalError
from goalloop.goal import parse_goal


def mistake(text: str) -> str:
    with pytest.raises(GoalError) as caught:
        parse_goal(text, Path("g.yaml"))
    return f"{caught.value.message}\n  fix: {caught.value.fix}"


def test_a_missing_key_and_a_wrong_value_quote_the_docstring() -> None:
    text = mistake("check: {run: 'true', metric: 'x (\\S+)'}\nholdout: {run: 'true'}\nkeep: {min_delta: [1]}\n"
                   "proposer: {kind: command, run: x}\n")
    assert "add `metric:` under holdout: (Regex for the holdout's metric, read like check.metric" in text
    assert 'min_delta: takes the smallest improvement that counts: a number in the metric\'s units, or a share ' \
           'such as "1%" (see GOAL_TEMPLATE.md)' in text


def test_loading_a_goal_reads_no_source_for_docstrings() -> None:
    """Loading and validating a goal, as every command does, leaves the docstrings unread (that is the saving);
    they are there once a mistake asks."""
    script = (
        "import inspect, pathlib\n"
        "read = []\n"
        "real = inspect.getsource\n"
        "inspect.getsource = lambda obj: read.append(obj) or real(obj)\n"
        "from goalloop.goal import Check, parse_goal\n"
        "parse_goal(\"check: {run: 'true'}\\nproposer: {kind: command, run: x}\\n\", pathlib.Path('g.yaml'))\n"
        "assert not read and Check.model_fields['run'].description is None, read\n"
        "from goalloop.goal.docs import describe_fields\n"
        "describe_fields()\n"
        "print(Check.model_fields['run'].description)\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.startswith("Shell command, run with /bin/sh in the worktree.")
