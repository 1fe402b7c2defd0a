"""What `validate` warns about: goal files that load but would waste a night.

Each warning names what is wrong and the fix:
- a protected, editable or context pattern that matches no file at base (a protected glob that matches
  nothing protects nothing: the tests it meant are open to the proposer);
- a check, holdout or proposer command that is not on PATH or not in the repository;
- a path in the check that exists only in the user's checkout (untracked, so not in the worktree), or
  an absolute path to a tracked file of the checkout (the check would use the checkout's copy);
- a metric goal measured once per state: its gains are single measurements.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pathspec

from goalloop.git_runner import git_environment
from goalloop.goal import Goal
from goalloop.repo_target import RepoTarget

SHELL_WORDS = {"cd", "export", "set", "if", "then", "else", "fi", "for", "do", "done", "while", "case", "esac",
               "exec", "env", "time", "true", "false", "test", "[", "echo", "printf", "source", ".", "!", "{", "}",
               "(", ")", "exit", "ulimit", "umask", "nice", "timeout", "command", "sh", "bash"}
_SEGMENT = re.compile(r"&&|\|\||[;|&\n]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


def goal_warnings(goal: Goal, target: RepoTarget, env: dict[str, str] | None = None) -> list[str]:
    """Every warning for `goal` against its repository at base (see the module docstring)."""
    files = _files_at(target)
    found = _unmatched_patterns(goal, target, files)
    commands = [("check.run", goal.check.run)]
    if goal.holdout is not None:
        commands.append(("holdout.run", goal.holdout.run))
    proposer_run = getattr(goal.proposer, "run", None)
    if isinstance(proposer_run, str):
        commands.append(("proposer.run", proposer_run))
    path = (env or os.environ).get("PATH", "")
    for key, command in commands:
        found += _missing_programs(key, command, target, files, path)
    found += _checkout_paths(goal.check.run, target, files)
    if goal.is_metric_goal and goal.keep.repeats == 1:
        found.append("keep.repeats is 1: every gain is a single measurement, so a lucky run of the check is kept "
                     "as a gain; set keep.repeats: 3 to keep only gains beyond the check's noise")
    return found


def _files_at(target: RepoTarget) -> list[str]:
    listing = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", target.base_commit], cwd=target.root,
                             env=git_environment(os.environ), capture_output=True, check=False, timeout=60)
    return [f for f in listing.stdout.decode("utf-8", errors="replace").split("\0") if f]


def _unmatched_patterns(goal: Goal, target: RepoTarget, files: list[str]) -> list[str]:
    found = []
    suggestion = None
    for key, patterns in (("protected", goal.protected), ("editable", goal.editable), ("context", goal.context)):
        for pattern in patterns:
            spec = pathspec.PathSpec.from_lines("gitignore", [pattern])
            if any(spec.match_file(f) for f in files) or (key == "context" and pattern in files):
                continue
            fix = "fix the pattern or remove it"
            if key == "protected":
                from goalloop.starter import read_layout

                suggestion = suggestion or read_layout(target.root).protected
                fix = (f"the tests here are protected by {', '.join(suggestion)}" if suggestion else
                       "name the files the check depends on")
            found.append(f"{key}: '{pattern}' matches no file in the repository at base, so it "
                         f"{'protects' if key == 'protected' else 'selects'} nothing; {fix}")
    return found


def _segments(command: str) -> list[list[str]]:
    segments = []
    for part in _SEGMENT.split(command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        words = [w for w in words if not _ASSIGNMENT.match(w)] if words else []
        if words:
            segments.append(words)
    return segments


def _missing_programs(key: str, command: str, target: RepoTarget, files: list[str], path: str) -> list[str]:
    found = []
    for words in _segments(command):
        program = words[0]
        if program in SHELL_WORDS or "$" in program or "`" in program:
            continue
        if "/" not in program:
            if shutil.which(program, path=path) is None:
                found.append(f"{key}: `{program}` is not on PATH; install it, or write its full path")
            continue
        if os.path.isabs(program):
            if not os.path.exists(program):
                found.append(f"{key}: {program} does not exist")
            continue
        rel = os.path.normpath(program)
        if rel not in files:
            where = ("exists in your checkout but git does not track it, so it is not in the worktree the run uses"
                     if (target.root / rel).exists() else "is not in the repository at base")
            fix = f"write its absolute path ({target.root / rel})" if (target.root / rel).exists() else \
                "commit it, or fix the path"
            found.append(f"{key}: {program} {where}; {fix}")
    return found


def _checkout_paths(command: str, target: RepoTarget, files: list[str]) -> list[str]:
    """Arguments of the check that point into the user's checkout instead of the worktree."""
    found = []
    root = target.root.resolve()
    for words in _segments(command):
        for word in words[1:]:
            value = word.split("=", 1)[-1]
            if not value or value.startswith("-") or ("/" not in value and "." not in value):
                continue
            path = Path(value)
            if path.is_absolute():
                try:
                    rel = path.resolve().relative_to(root).as_posix()
                except ValueError:
                    continue
                if rel in files or any(f.startswith(rel + "/") for f in files):
                    found.append(f"check.run: {value} is in your checkout, so the check reads your checkout's copy, "
                                 f"not the worktree's; write it relative to the repository root: {rel}")
            elif "/" in value and value.split("/")[0] not in (".", "..") and (root / value).exists() \
                    and not (value in files or any(f.startswith(value.rstrip("/") + "/") for f in files)):
                found.append(f"check.run: {value} exists in your checkout but git does not track it, so the "
                             "worktree has no such path; commit it, or write its absolute path")
    return found
