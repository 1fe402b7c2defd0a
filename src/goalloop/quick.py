"""The `goalloop` command's entry point. `status` and `runs`, typed often and from other terminals while a run
goes on, are answered here from each run's summary (tally.py) with the standard library alone, so they start
at once; `validate GOAL.yaml`, typed after every edit of a goal file, prints validation.py's lines (or the
mistake, as errors.shown says it) here, without the typer app and rich. Every other command, and whatever this
path is not sure to print exactly as the typer app in cli/ would, goes to that app unchanged: an option it does
not know, help, a usage error or an unreadable run (their messages), a mistake in CI (annotated there), text
rich would read as markup or emoji, a run from before budget.json, and on a terminal `runs` and `--json` (rich
lays out and colours those) or a terminal without rich's standard colours.

The figures are those of report/standing.py and cli/records.py, computed from the fold instead of the whole
ledger; tests/test_status_fast.py runs both paths over many runs and compares what they print byte for byte,
and tests/test_validate_fast.py does so for goal files.
"""

from __future__ import annotations

import json
import os
import sys
TYPE_CHECKING = False  # not typing's: importing typing is a tenth of what status may take to start
if TYPE_CHECKING:
    from typing import Any

from goalloop import tally
from goalloop.clock import format_duration

VERDICTS = ("keep", "discard", "crash", "rejected")
_RUN_META = {"run_id", "goal_name", "goal_path", "repo", "base_commit", "branch", "worktree", "created_at",
             "metric_goal", "direction", "target"}
_RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")
"""Variables that make rich print as if to a terminal: the typer app prints then."""
_TABLE_WIDTH = 200
"""Off a terminal `runs` prints its table at least this wide (records.show_runs)."""


class _Unsure(Exception):
    """Something this path does not print exactly as the typer app would."""


class Refused(Exception):
    """A command this path answered with an error (`text`, for stderr) and the exit code it ends with."""

    def __init__(self, text: str, exit_code: int) -> None:
        super().__init__(text)
        self.text = text
        self.exit_code = exit_code


def main() -> None:
    try:
        text = answer(sys.argv[1:])
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except Refused as refused:
        if hasattr(sys.stderr, "reconfigure"):
            sys.stderr.reconfigure(errors="backslashreplace")
        sys.stderr.write(refused.text)
        sys.stderr.flush()
        sys.exit(refused.exit_code)
    if text is None:
        from goalloop.cli import main as full

        full()
        return
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    sys.stdout.write(text)
    sys.stdout.flush()
    sys.exit(0)


def answer(args: list[str]) -> str | None:
    """What `goalloop <args>` prints on stdout, if it is `status`, `runs` or `validate` succeeding as this path
    can say it; None for anything the typer app must answer."""
    if not args or args[0] not in ("status", "runs", "validate") or any(name in os.environ for name in _RICH_ENV):
        return None
    try:
        if args[0] == "validate":
            return _validate(args[1:])
        options = _options(args[1:], takes_run=args[0] == "status")
        if options is None:
            return None
        home, run_id, as_json = options
        runs_dir = os.path.join(os.path.realpath(home), "runs")
        if sys.stdout.isatty():
            if as_json or not _colours_as_rich():
                return None  # rich colours JSON on a terminal: the typer app prints it
            if args[0] == "runs":
                return _runs(runs_dir, as_json, width=_terminal_width())
            return _status(runs_dir, run_id, as_json, styled=True)
        return _status(runs_dir, run_id, as_json) if args[0] == "status" else _runs(runs_dir, as_json)
    except Refused:
        raise
    except Exception:  # the typer app says it, or reports the error its own way
        return None


def in_ci(args: list[str]) -> bool:
    """Whether goalloop runs as a CI job (GITHUB_ACTIONS, or CI=true, or --ci given): errors are then also
    annotated for GitHub, on stdout."""
    return os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("CI", "").lower() == "true" or "--ci" in args


def _colours_as_rich() -> bool:
    """Whether rich would print to this terminal in its standard colours (not none, not colourless)."""
    return os.environ.get("TERM", "").strip().lower() not in ("dumb", "unknown") and not os.environ.get("NO_COLOR")


def _options(args: list[str], takes_run: bool) -> tuple[str, str | None, bool] | None:
    """`[RUN_ID] [--home DIR] [--json]` in any order, each once; None for anything else (help, a typo...)."""
    home: str | None = None
    run_id: str | None = None
    as_json = False
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if token == "--json" and not as_json:
            as_json = True
        elif token.startswith("--home") and home is None:
            if token == "--home":
                if not rest:
                    return None
                token = rest.pop(0)
            elif token.startswith("--home="):
                token = token[len("--home="):]
            else:
                return None
            if not token or token.startswith("-"):
                return None
            home = token
        elif takes_run and run_id is None and token and not token.startswith("-"):
            run_id = token
        else:
            return None
    return home or ".", run_id, as_json


# -- reading the runs ---------------------------------------------------------------------------------------
def _list_runs(runs_dir: str) -> list[str]:
    """Run folders, oldest first, as ledger.list_runs orders them."""
    if not os.path.isdir(runs_dir):
        return []
    found = []
    for entry in os.scandir(runs_dir):
        meta = os.path.join(entry.path, "run.json")
        if os.path.isfile(meta):
            found.append((os.stat(meta).st_mtime, entry.name, entry.path))
    return [path for _, _, path in sorted(found)]


def _find_run(runs_dir: str, run_id: str | None) -> str:
    runs = _list_runs(runs_dir)
    if not runs:
        raise _Unsure("no runs: the typer app says so")
    if run_id is None:
        return runs[-1]
    names = [os.path.basename(p) for p in runs]
    matches = [p for p, n in zip(runs, names) if n == run_id] or [p for p, n in zip(runs, names) if n.startswith(run_id)]
    if len(matches) != 1:
        raise _Unsure("no such run, or several: the typer app says so")
    return matches[0]


class _Run:
    """A run folder as status and runs read it: run.json and the fold of events.jsonl."""

    def __init__(self, run_dir: str) -> None:
        self.dir = run_dir
        with open(os.path.join(run_dir, "run.json"), "rb") as stream:
            meta = json.loads(stream.read())
        if not isinstance(meta, dict) or set(meta) != _RUN_META:
            raise _Unsure("run.json does not read as a run")
        self.meta = meta
        self.tally = tally.load(run_dir)
        self.tally.finish()
        self.s = self.tally.s

    @property
    def stop(self) -> dict[str, Any] | None:
        return self.s["stop"]

    @property
    def finished(self) -> bool:
        return self.stop is not None and self.stop.get("exit_code") in (0, 1)

    @property
    def elapsed(self) -> float:
        return 0.0 if self.s["elapsed"] is None else self.s["elapsed"]

    def state(self) -> str:
        """As records.run_state: the state it stopped in, or `running` while its lock's process lives."""
        if self.stop is not None:
            return str(self.stop.get("state", "stopped"))
        lock = os.path.join(os.path.dirname(self.dir), ".locks", f"{self.meta['goal_name']}.owner")
        owner = ""
        if os.path.exists(lock):
            with open(lock, encoding="utf-8") as stream:
                owner = stream.read().strip()
        if owner and self.meta["run_id"] in owner and _pid_alive(owner):
            return "running"
        return "stopped (killed?)"


def _pid_alive(owner: str) -> bool:
    try:
        os.kill(int(owner.split()[1]), 0)
        return True
    except (IndexError, ValueError, ProcessLookupError, PermissionError):
        return False


# -- status -------------------------------------------------------------------------------------------------
_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold yellow": "1;33",
        "bold red": "1;31"}
VERDICT_STYLE = {"baseline": "cyan", "keep": "green", "discard": "dim", "crash": "red", "rejected": "yellow"}
"""How each verdict is coloured, by status and the live view."""


def _status(runs_dir: str, run_id: str | None, as_json: bool, styled: bool = False) -> str:
    run = _Run(_find_run(runs_dir, run_id))
    budget = tally.saved_budget(run.dir)
    if budget is None:
        raise _Unsure("no budget.json (a run from before it): the goal file says the budget")
    standing = _standing(run, run.state(), budget)
    metric_goal = run.meta["metric_goal"]
    last = run.s["last"]
    if as_json:
        standing["last_attempts"] = [
            {"iteration": a["iteration"], "verdict": a["verdict"], "result": tally.result_text(a, metric_goal),
             "metric": a["metric"], "seconds": a["seconds"], "cost_usd": a["cost_usd"],
             "description": a["description"], "reason": a["reason"]} for a in last]
        return json.dumps(standing, indent=2, ensure_ascii=False) + "\n"
    meta, said, shown = run.meta, [], []

    def line(*chunks: str | tuple[str, str]) -> None:
        said.append("".join(_styled(chunk, False) for chunk in chunks))
        shown.append("".join(_styled(chunk, styled) for chunk in chunks))

    line("run ", (plain(meta["run_id"]), "bold"), "  goal ", meta["goal_name"], "  ", (standing["state"], "bold"))
    if standing["reason"]:
        line("  stopped    ", standing["reason"])
    if standing["resumable"] and "goalloop resume" not in standing["reason"]:
        line("  resume     goalloop resume ", plain(meta["run_id"]))
    for now in standing["in_progress"]:
        line(f"  now        {_now_text(now)}", plain(f" (worktree {now['slot']})") if now["slot"] else "")
    counts = ", ".join(f"{n} {v}" for v, n in standing["verdicts"].items() if n) or "none yet"
    line(f"  attempts   {run.s['tried']} ({counts})")
    if standing["best_attempt"] is not None:
        line("  best       ", plain(f"{standing['best']} at attempt {standing['best_attempt']} (baseline "
                                    f"{standing['baseline']})"))
    for index, (name, use) in enumerate(standing["budget"].items()):
        line(f"  {'budget' if index == 0 else '':10} ", _use_text(name, use))
    line("  spent      ", standing["spent"] or tally.NOT_TRACKED)
    for finding in standing["findings"]:
        line("  ", (finding, "yellow"))
    line("  branch     ", plain(f"{meta['branch']}  (in {meta['repo']})"))
    line("  record     ", plain(run.dir))
    for attempt in last:
        line("  ", *_attempt_line(attempt, metric_goal))
    _checked("".join(text + "\n" for text in said))
    return "".join(text + "\n" for text in shown)


def _standing(run: _Run, state: str, budget: dict[str, Any]) -> dict[str, Any]:
    """Standing.of's figures, as Standing.as_json lays them out (the caller adds last_attempts)."""
    s, meta = run.s, run.meta
    running = state == "running"
    now = None
    if running:
        from datetime import datetime, timezone

        now = datetime.now(timezone.utc)
    unpaid = [e for e in s["set_aside"] if not run.tally.recorded(e["iteration"])]
    cost = run.tally.cost_usd() + sum(e.get("cost_usd") or 0.0 for e in unpaid)
    tokens = s["tokens"] + sum(e.get("tokens") or 0 for e in unpaid)
    elapsed = run.elapsed + (_since(s["last_start_ts"], now) if running else 0.0)
    uses = {"attempts": (s["tried"], budget["iterations"]), "time": (elapsed, budget["time"])}
    if budget["tokens"] is not None:
        uses["tokens"] = (tokens, budget["tokens"])
    if budget["usd"] is not None:
        uses["usd"] = (cost, budget["usd"])
    best, baseline = run.tally.kept(), s["baseline"]
    metric_goal = meta["metric_goal"]
    return {
        "run_id": meta["run_id"], "goal": meta["goal_name"], "state": state,
        "reason": str(run.stop.get("reason", "")) if run.stop else "",
        "resumable": not run.finished and not running, "attempts": s["tried"],
        "verdicts": {v: s["counts"].get(v, 0) for v in VERDICTS},
        "best": tally.result_text(best, metric_goal) if best else "-",
        "best_attempt": best["iteration"] if best else None,
        "baseline": tally.result_text(baseline, metric_goal) if baseline else "-",
        "spent": tally.spent_text(s["tried"], s["unknown_cost"], cost, tokens) if s["tried"] else None,
        "budget": {name: {"used": used, "limit": limit, "left": None if limit is None else max(limit - used, 0)}
                   for name, (used, limit) in uses.items()},
        "in_progress": _in_progress(run, now) if running else [],
        "findings": _findings(run, metric_goal),
        "branch": meta["branch"], "repo": meta["repo"], "record": run.dir,
    }


def _when(ts: object) -> Any:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None


def _since(ts: object, now: Any) -> float:
    when = _when(ts)
    return max((now - when).total_seconds(), 0.0) if when else 0.0


def _in_progress(run: _Run, now: Any) -> list[dict[str, Any]]:
    s, found = run.s, []
    for slot, latest in sorted(s["latest"].items(), key=lambda item: int(item[0])):
        iteration = latest["iteration"]
        if run.tally.recorded(iteration):
            continue
        started = _when(s["started"][str(iteration)]) or now
        found.append({"iteration": iteration, "slot": latest["slot"], "phase": str(latest["phase"]),
                      "seconds": max((now - started).total_seconds(), 0)})
    return found


def _findings(run: _Run, metric_goal: bool) -> list[str]:
    """report.data.findings, from the fold."""
    s = run.s
    found = [tally.set_aside_line(e) for e in s["set_aside"]]
    if run.stop is not None and not run.finished:
        found += [f"interrupted: attempt {n} was under way when the run stopped; `goalloop resume` proposes it "
                  "again (what it had changed is kept at a ref)"
                  for n in sorted(n for n in s["under_way"] if not run.tally.recorded(n) and n > 0)]
    base = s["baseline"]
    if base is not None and base["reason"]:
        found.append(f"baseline: {base['reason']}")
    if metric_goal and base is not None and base["metric"] is not None and not base["samples"]:
        found.append("gains are single measurements (keep.repeats: 1): a lucky run of the check counts as a gain")
    found += s["event_findings"]
    found += [f"warning: attempt {n}: {text}" for n, text in sorted(s["warnings"])]
    return found


def _now_text(now: dict[str, Any]) -> str:
    return f"attempt {now['iteration']}: {now['phase']}, {format_duration(now['seconds'])}"


def _use_text(name: str, use: dict[str, Any]) -> str:
    """BudgetUse.text."""
    show = {"attempts": lambda v: f"{v:g}", "time": format_duration, "tokens": lambda v: f"{v:,.0f}",
            "usd": lambda v: f"${v:.2f}"}[name]
    unit = {"attempts": " attempts", "tokens": " tokens"}.get(name, "")
    if use["limit"] is None:
        return f"{show(use['used'])}{unit}"
    return f"{show(use['used'])} of {show(use['limit'])}{unit}, {show(use['left'] or 0)} left"


def _attempt_line(a: dict[str, Any], metric_goal: bool) -> list[str | tuple[str, str]]:
    """summary.attempt_line, in chunks."""
    if a["verdict"] not in VERDICT_STYLE:
        raise _Unsure("a verdict without a style")
    cost = f"${a['cost_usd']:.3f}" if a["cost_usd"] else ""
    chunks: list[str | tuple[str, str]] = [
        f"#{a['iteration']:<4} ", (f"{a['verdict']:8}", VERDICT_STYLE[a["verdict"]]),
        f" {plain(tally.result_text(a, metric_goal)):>10}  {a['seconds']:6.1f}s {cost:>7}  {a['description'][:100]}"]
    if a["reason"] and a["verdict"] != "discard":
        chunks += [" ", (f"({a['reason']})", "dim")]
    if a["warning"]:
        chunks += [" ", (f"warning: {a['warning']}", "bold yellow")]
    return chunks


def _styled(chunk: str | tuple[str, str], styled: bool) -> str:
    """A chunk as rich prints it: its text, and on a terminal its style's SGR codes around it."""
    if isinstance(chunk, str):
        return chunk
    text, style = chunk
    return f"\x1b[{_SGR[style]}m{text}\x1b[0m" if styled else text


# -- runs ---------------------------------------------------------------------------------------------------
def _terminal_width() -> int:
    """The width rich gives its console on this terminal: COLUMNS, else the first standard stream's."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except OSError:
            continue
    return 80


def _runs(runs_dir: str, as_json: bool, width: int | None = None) -> str:
    """records.show_runs; `width`: on a terminal that wide (the header bold), else off one."""
    rows = []
    for folder in reversed(_list_runs(runs_dir)):
        run = _Run(folder)
        best = run.tally.kept()
        rows.append({"run_id": run.meta["run_id"], "goal": run.meta["goal_name"], "state": run.state(),
                     "attempts": run.s["tried"],
                     "best": tally.result_text(best, run.meta["metric_goal"]) if best else None,
                     "time": run.elapsed, "started": run.meta["created_at"]})
    if as_json:
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if not rows:
        return "no runs yet; start one with `goalloop run goals/<goal>.yaml`\n"
    cells = [["run", "state", "attempts", "best", "time"]]
    cells += [[plain(r["run_id"]), plain(r["state"]), str(r["attempts"]), plain(r["best"] or "-"),
               format_duration(r["time"])] for r in rows]
    for row in cells:
        if any(not cell.isascii() or not cell.isprintable() for cell in row):
            raise _Unsure("a cell rich would measure or render otherwise")
        if len(row[3]) > 12:
            row[3] = row[3][:11] + "…"
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    widths[0] = max(widths[0], 12)
    if sum(widths) + 2 * 4 > (_TABLE_WIDTH if width is None else width):
        raise _Unsure("a table rich would fold to fit")
    lines = []
    for index, row in enumerate(cells):
        padded = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(5)]
        if index == 0 and width is not None:
            bold = [f"\x1b[1m{cell}\x1b[0m" for cell in padded]
            lines.append(f"\x1b[1m \x1b[0m\x1b[1m \x1b[0m".join(bold) + "\n")
        else:
            lines.append("  ".join(padded) + "\n")
    _checked("".join(lines[width is not None:]))
    return "".join(lines)


# -- validate -----------------------------------------------------------------------------------------------
def _validate(args: list[str]) -> str | None:
    """validation.py's lines for `validate GOAL.yaml` as the typer app prints them (cli/goals.py: rich, each
    chunk's text escaped); None for any other arguments."""
    if len(args) != 1 or not args[0] or args[0].startswith("-"):
        return None
    styled = sys.stdout.isatty()
    if styled and not _colours_as_rich():
        return None
    import gc
    from pathlib import Path

    from goalloop.errors import GoalloopError, shown

    gc.disable()  # validate makes few cycles and ends at once: collecting would only traverse, again and again,
    try:          # the many objects its imports and the goal's models are
        from goalloop.validation import validation_lines

        text = "".join(_escaped_line(line, styled) + "\n" for line in validation_lines(Path(args[0])))
    except GoalloopError as exc:  # a mistake in the goal: said as the typer app says it, unless annotated in CI
        styled = sys.stderr.isatty()
        if in_ci(args) or (styled and not _colours_as_rich()):
            raise _Unsure("the typer app says it") from None
        said = "".join(_escaped_line(line, styled) + "\n" for line in shown(exc.message, exc.fix))
        gc.freeze()
        raise Refused(said, exc.exit_code) from None
    finally:
        gc.enable()
    gc.freeze()  # nor are they traversed again as the interpreter exits
    return text


def _escaped_line(chunks: list[str | tuple[str, str]], styled: bool) -> str:
    """A line whose chunks rich is given escaped: their text, sure only without a bracket (escaping and
    reading back keeps a bracket only in some places) or a chunk ending in a backslash (escaped, it shows
    twice)."""
    texts = [chunk if isinstance(chunk, str) else chunk[0] for chunk in chunks]
    if any("[" in text or text.endswith("\\") for text in texts):
        raise _Unsure("text rich would print otherwise once escaped")
    _checked("".join(texts), escaped=True)
    return "".join(_styled(chunk, styled) for chunk in chunks)


# -- what rich would print otherwise ------------------------------------------------------------------------
def plain(text: str) -> str:
    """Text the typer app puts in markup unescaped: sure only without brackets or backslashes."""
    if "[" in text or "\\" in text:
        raise _Unsure("text rich would read as markup")
    return text


def _checked(text: str, escaped: bool = False) -> str:
    """`text`, if rich prints it unchanged off a terminal: no control characters (rich drops some, expands
    tabs), no backslash unless `escaped` (its escaping of one before a closing bracket shows), no `:name:`
    that is an emoji."""
    if any(ord(c) < 32 and c != "\n" or c == "\x7f" for c in text) or ("\\" in text and not escaped):
        raise _Unsure("a character rich would print otherwise")
    if text.count(":") > 1:
        import re

        names = [m.group(2) for m in re.finditer(r"(:(\S*?)(?:(?:\-)(emoji|text))?:)", text)]
        if names:
            from rich._emoji_codes import EMOJI

            if any(name.lower() in EMOJI for name in names):
                raise _Unsure("an emoji code rich would replace")
    return text
