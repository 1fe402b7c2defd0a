"""Starter goal files written by `goalloop init`: commented, and guessing the check from the repository."""

from __future__ import annotations

from pathlib import Path

SCHEMA_COMMENT = "# yaml-language-server: $schema=./goal.schema.json\n"

PROPOSER_BLOCKS = {
    "claude": """\
proposer:
  kind: claude                    # Claude through the API; needs ANTHROPIC_API_KEY
  # model: claude-sonnet-5-5      # default: a current Sonnet
  # max_turns: 30                 # model turns per attempt
""",
    "command": """\
proposer:
  kind: command                   # any agent CLI that edits files in place
  # The prompt is in $GOALLOOP_PROMPT_FILE. Claude Code:
  run: claude -p "$(cat "$GOALLOOP_PROMPT_FILE")" --permission-mode acceptEdits
  # Codex:  codex exec --full-auto "$(cat "$GOALLOOP_PROMPT_FILE")"
  # Aider:  aider --yes --message-file "$GOALLOOP_PROMPT_FILE"
  timeout: 30m
env:
  pass: [ANTHROPIC_API_KEY]       # secrets are hidden from checks and commands unless passed here
""",
    "search": """\
proposer:
  kind: search                    # numeric search with Optuna; no model, no key
  params:
    # Each knob: a file, a regex whose group 1 is the value, and a range or a list of choices.
    learning_rate: {file: CHANGE_ME.py, pattern: 'LR = ([0-9.e-]+)', low: 1.0e-4, high: 1.0e-1, log: true}
""",
}


def guess_check(repo_root: Path) -> tuple[str, str | None]:
    """(check command, metric regex or None) for what the repository looks like."""
    if (repo_root / "pyproject.toml").exists() or (repo_root / "pytest.ini").exists() or (repo_root / "tests").is_dir():
        return "python3 -m pytest -q -x", None
    if (repo_root / "package.json").exists():
        return "npm test", None
    if (repo_root / "Cargo.toml").exists():
        return "cargo test", None
    if (repo_root / "go.mod").exists():
        return "go test ./...", None
    makefile = repo_root / "Makefile"
    if makefile.exists() and "test:" in makefile.read_text(encoding="utf-8", errors="replace"):
        return "make test", None
    return "./check.sh", r"^score:\s*(\S+)"


def starter_goal(kind: str, repo_root: Path, goal_path: Path) -> str:
    """A commented goal file for `kind` working on `repo_root`, to be written at `goal_path`."""
    check, metric = guess_check(repo_root)
    try:
        repo_rel = Path(_relpath(repo_root, goal_path.parent))
    except ValueError:
        repo_rel = repo_root
    metric_lines = (
        f"  metric: '{metric}'          # the number is group 1 of the last matching stdout line\n"
        if metric
        else "  # metric: '^score:\\s*(\\S+)'  # add a regex to optimise a number instead of pass/fail\n"
    )
    target = (
        "target:\n  direction: maximize\n  # value: 0.95                  # stop as soon as the metric reaches this\n"
        if metric
        else "# target: the check passes (exit code 0)\n"
    )
    return (
        SCHEMA_COMMENT
        + "# A goalloop goal file. Every key is described in GOAL_TEMPLATE.md.\n"
        + f"repo: {repo_rel.as_posix()}                        # the git repository to work on\n"
        + "base: HEAD\n"
        + "instructions: |\n  Describe the task here: what to improve, what to leave alone, what you have tried.\n"
        + "# context: [README.md]           # files always shown to the proposer\n"
        + "# editable: [\"src/**\"]           # only these may change (default: all but protected)\n"
        + "protected: [\"tests/**\"]          # never changed; a change here is rejected\n"
        + "check:\n"
        + f"  run: {check}\n"
        + "  timeout: 10m\n"
        + metric_lines
        + target
        + "budget:\n  iterations: 20\n  time: 8h\n"
        + ("  usd: 5.00\n" if kind == "claude" else "")
        + PROPOSER_BLOCKS[kind]
    )


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())
