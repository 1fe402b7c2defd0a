"""The prompt every proposer is given: a stable prefix (rules, goal, context) and the recent history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from goalloop.goal import Goal, format_duration
from goalloop.goal.paths import read_inside
from goalloop.proposers.base import Prompt

if TYPE_CHECKING:
    from goalloop.ledger import AttemptRecord
    from goalloop.path_rules import PathRules
    from goalloop.frontier import Node

CONTEXT_FILE_LIMIT = 50_000
CONTEXT_FILE_BYTES = 4 * CONTEXT_FILE_LIMIT + 1
"""Read no more of a context file than can be shown (UTF-8 takes at most 4 bytes a character)."""
RECENT_ROWS = 40

ROLE = """\
You are improving a git repository in an automatic loop. Each attempt, you change files in the working
directory; the loop then commits your change, runs an objective check, and keeps the change only if the
check improves (otherwise it is reverted, but recorded). Work in small, testable steps.

Rules the loop enforces:
- The result is read by the loop from the check it runs itself. Printing a result yourself achieves nothing.
- A change to a protected file, or outside the editable files, is rejected without running the check.
- An attempt that changes nothing is rejected.
- Simplicity counts: a tiny gain bought with a lot of added code is not worth keeping. Removing code for an
  equal result is a win."""


def build_prompt(
    goal: Goal,
    rules: PathRules,
    worktree: Path,
    read_at_base: Callable[[str], str | None],
    history: list[AttemptRecord],
    last_output: str,
    notes: list[str] | None = None,
    kept: list[tuple[int, AttemptRecord]] | None = None,
) -> Prompt:
    """The prompt for the next attempt.

    Context files appear in the stable part as they were at the base commit, so that part stays an
    identical prefix (cheap to cache) even when a kept attempt edits a context file; the current text of
    any context file that changed since follows in the recent part. `kept`: (position in `history`,
    record) of every kept state, so the table is built without reading the whole history.
    """
    context = [(path, read_at_base(path), read_inside(worktree, path, CONTEXT_FILE_BYTES)) for path in goal.context]
    changed = [
        f"## Context file changed since the start: {path}\n```\n{_cap(now).rstrip()}\n```"
        for path, at_base, now in context
        if now != at_base
    ]
    return Prompt(
        stable=_stable_part(goal, rules, [(path, at_base) for path, at_base, _ in context]),
        recent=_recent_part(goal, history, last_output, changed + list(notes or []), kept),
    )


def _cap(text: str | None) -> str:
    if text is None:
        return "(this file does not exist)"
    if len(text) > CONTEXT_FILE_LIMIT:
        return text[:CONTEXT_FILE_LIMIT] + f"\n[... cut at {CONTEXT_FILE_LIMIT:,} characters ...]"
    return text


def describe_check(goal: Goal) -> str:
    check = goal.check
    if check.metric is None:
        return f"`{check.run}` must exit with code 0 (pass/fail)."
    target = f"; target: {goal.target.value:g}" if goal.target.value is not None else ""
    return (
        f"`{check.run}` prints a metric (read from stdout by the pattern `{check.metric}`); "
        f"{goal.target.direction} it{target}. Timeout: {format_duration(check.timeout)}."
    )


def _stable_part(goal: Goal, rules: PathRules, context: list[tuple[str, str | None]]) -> str:
    editable = ", ".join(goal.editable) if goal.editable else "any file that is not protected"
    protected = ", ".join(p.lstrip("/") for p in rules.protected_patterns) or "(none)"  # holdout files unnamed
    parts = [
        ROLE,
        f"# Goal: {goal.run_name}",
        f"Check: {describe_check(goal)}\nYou may change: {editable}\nNever change: {protected}",
        "# Instructions\n" + (goal.instructions_text() or "(none given: improve the check's result)"),
    ]
    parts += [f"## Context: {path}\n```\n{_cap(text).rstrip()}\n```" for path, text in context]
    return "\n\n".join(parts)


def _format_result(record: AttemptRecord, metric_goal: bool) -> str:
    if record.verdict in ("rejected", "crash"):
        return "-"
    if metric_goal:
        return "-" if record.metric is None else f"{record.metric:.6g}"
    return "pass" if record.passed else "fail"


def attempts_table(goal: Goal, history: list[AttemptRecord], rows: int = RECENT_ROWS,
                   kept: list[tuple[int, AttemptRecord]] | None = None) -> str:
    """Every kept attempt and the last `rows` attempts, one line each."""
    tail = max(len(history) - rows, 0)
    if kept is None:
        shown = [r for i, r in enumerate(history) if r.verdict in ("baseline", "keep") or i >= tail]
    else:
        shown = [r for i, r in kept if i < tail] + history[tail:]
    lines = ["| # | verdict | result | +lines | description |", "|---|---|---|---|---|"]
    skipped = len(history) - len(shown)
    if skipped:
        lines.append(f"| … | {skipped} older attempts not shown | | | |")
    for r in shown:
        note = r.description if not r.reason else f"{r.description} ({r.reason})".strip()
        note = " ".join(note.split())[:160].replace("|", "\\|")
        lines.append(f"| {r.iteration} | {r.verdict} | {_format_result(r, goal.is_metric_goal)} | {r.added_lines} | {note} |")
    return "\n".join(lines)


def _recent_part(goal: Goal, history: list[AttemptRecord], last_output: str, notes: list[str],
                 kept: list[tuple[int, AttemptRecord]] | None = None) -> str:
    parts = list(notes) + ["# Attempts so far\n" + attempts_table(goal, history, kept=kept)]
    if history:
        last = history[-1]
        label = "baseline" if last.iteration == 0 else f"attempt {last.iteration}, {last.verdict}"
        parts.append(f"# Output of the last check ({label})\n```\n{last_output.strip() or '(no output)'}\n```")
    parts.append("Now make your next change.")
    return "\n\n".join(parts)


def tree_notes(goal: Goal, parent: Node, best: Node) -> list[str]:
    """For a tree search: where this attempt starts (the parent's lineage, root first) and what was already
    tried from there (best first), so the proposer builds on that state and does not repeat its siblings."""
    metric_goal = goal.is_metric_goal
    where = "the best so far" if parent is best else \
        f"not the best so far (attempt {best.iteration}: {_format_result(best.record, metric_goal)})"
    lines = [f"# Where this attempt starts\nYou start from attempt {parent.iteration} "
             f"({_format_result(parent.record, metric_goal)}), {where}: your worktree holds that state. "
             "How it was reached:", "| # | result | description |", "|---|---|---|"]
    for node in parent.lineage():
        lines.append(f"| {node.iteration} | {_format_result(node.record, metric_goal)} | {_cell(node.record.description)} |")
    notes = ["\n".join(lines)]
    if parent.tried:
        tried = sorted(parent.tried, key=lambda r: (r.verdict != "keep", -_score(goal, r), r.iteration))
        rows = [f"# Already tried from attempt {parent.iteration}\nDo not repeat these; try something else.",
                "| # | verdict | result | description |", "|---|---|---|---|"]
        rows += [f"| {r.iteration} | {r.verdict} | {_format_result(r, metric_goal)} | "
                 f"{_cell(r.description if not r.reason else f'{r.description} ({r.reason})')} |" for r in tried]
        notes.append("\n".join(rows))
    return notes


def _score(goal: Goal, record: AttemptRecord) -> float:
    if record.metric is None or record.verdict in ("rejected", "crash"):
        return float("-inf")
    return record.metric if goal.target.direction == "maximize" else -record.metric


def _cell(text: str) -> str:
    return " ".join(text.split())[:160].replace("|", "\\|")
