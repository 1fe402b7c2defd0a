"""A run's standing folded from events.jsonl one line at a time, and saved beside it as standing.json, so that
`goalloop status` and `goalloop runs` read a small summary and the few lines written since it, not every row
of a run of 10,000 attempts.

The fold gives what report/standing.py and report/data.py derive from a whole RunRecord (verdict counts,
spend, the kept attempt, the last attempts, the findings, the attempts in progress) and must agree with them
to the byte: tests/test_status_fast.py holds the two against each other. It uses json and os alone, so the
fast `status` path (quick.py) starts at once.

standing.json says how many bytes of events.jsonl it covers and what the last of them are. A summary that
does not match the file never changes an answer, only how long it takes: older than the file (a kill -9
between writes), the lines after it are folded; newer, corrupt, missing (a run from before it existed), it
is ignored and the whole file folded. A line the fold cannot be sure of (a row that does not read as an
attempt, an attempt recorded twice) makes it `broken`, and the caller reads the run the slow way.
"""

from __future__ import annotations

import bisect
import json
import os
TYPE_CHECKING = False  # not typing's: importing typing is a tenth of what status may take to start
if TYPE_CHECKING:
    from typing import Any

SUMMARY_FILE = "standing.json"
_VERSION = 1
PHASE_TAIL = b'"event": "phase", "ts": "'
"""How a phase event's line ends (the renderer writes `event` and `ts` last), found without parsing it."""
PHASE_TAIL_ROOM = len(PHASE_TAIL) + 40
_FINGERPRINT = 64
"""How many of the last covered bytes the summary holds, to tell the file it was made from."""
_SCALE = 2**1074
"""Costs are summed exactly as integers in units of the smallest float, so the total is math.fsum's."""
SAVE_EVERY = 0.5
"""Seconds between saves of the summary while a run writes (the lines since are read on each status)."""
_REQUIRED = ("iteration", "verdict", "description")
_ROW_DEFAULTS: dict[str, Any] = {"commit": None, "metric": None, "passed": False, "seconds": 0.0, "cost_usd": 0.0,
                                 "tokens": 0, "reason": "", "kept_commit": "", "elapsed": 0.0, "warning": "",
                                 "samples": []}
LAST_SHOWN = 5
"""The attempts status lists."""


class Broken(Exception):
    """A line the fold cannot be sure of: the run must be read whole."""


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _row(event: dict[str, Any]) -> tuple[dict[str, Any], int | None, float]:
    """An attempt event as the few fields status reads, checked as far as they are used."""
    if any(key not in event for key in _REQUIRED):
        raise Broken("an attempt without its required fields")
    row = {key: event.get(key, default) for key, default in _ROW_DEFAULTS.items()}
    row.update({key: event[key] for key in _REQUIRED})
    row["samples"] = bool(row["samples"])
    if not (type(row["iteration"]) is int and row["iteration"] >= 0 and isinstance(row["verdict"], str)
            and isinstance(row["description"], str) and isinstance(row["reason"], str)
            and isinstance(row["warning"], str) and isinstance(row["kept_commit"], str)
            and (row["commit"] is None or isinstance(row["commit"], str))
            and (row["metric"] is None or _number(row["metric"])) and _number(row["seconds"])
            and (row["cost_usd"] is None or _number(row["cost_usd"])) and type(row["elapsed"]) is float
            and (row["tokens"] is None or type(row["tokens"]) is int)):
        raise Broken(f"attempt {row['iteration']!r} has a field of an unexpected type")
    return row, row.pop("tokens"), row.pop("elapsed")


def checked(row: dict[str, Any]) -> bool:
    """Whether the check ran on this attempt (not for a rejection or a failed or lost proposal); `row` is a
    row of the fold or an AttemptRecord's fields."""
    return row["verdict"] != "rejected" and not (row["verdict"] == "crash" and not row["reason"].startswith("check"))


def result_text(row: dict[str, Any], metric_goal: bool) -> str:
    """The result as a person reads it: the metric, pass/fail, or '-' when the check did not run."""
    if not checked(row):
        return "-"
    if metric_goal:
        return "-" if row["metric"] is None else f"{row['metric']:.6g}"
    return "pass" if row["passed"] else "fail"



NOT_TRACKED = "not tracked"
"""How a cost nobody reported reads (a command proposer's agent CLI pays its own bills): never `$0.00`."""


def spent_text(attempts: int, unknown: int, cost_usd: float, tokens: int) -> str:
    """What the proposers spent: `$0.42, 12,000 tokens (+2 attempts not tracked)`; `cost not tracked, tokens
    not tracked` when none of `attempts` reported a cost (`unknown` did not)."""
    if attempts and unknown == attempts:
        return f"cost {NOT_TRACKED}, tokens {NOT_TRACKED}"
    shown = f", {tokens:,} tokens" if tokens else ""
    more = f" (+{unknown} attempts {NOT_TRACKED})" if unknown else ""
    return f"${cost_usd:.2f}{shown}{more}"

def set_aside_line(event: dict) -> str:
    """How an attempt set aside on resume reads: stopped before its verdict, its work kept, proposed again."""
    where = f"; its work is kept at {event['ref']}" if event.get("ref") else ""
    return (f"interrupted: attempt {event['iteration']} was stopped before its verdict ({event.get('how', '')}) "
            f"and proposed again on resume{where}")


def event_finding(event: dict[str, Any]) -> str | None:
    """The finding a noise, stall or confirm event reads as; None for other events."""
    name = event.get("event")
    if name == "noise":
        return f"noise: the baseline measured {len(event.get('samples') or [])} times, spread {_figure(event.get('spread'))}"
    if name == "stall":
        return f"stalled: {event.get('line')}"
    if name == "confirm":
        if isinstance(event.get("metric"), (int, float)) and isinstance(event.get("drift"), (int, float)):
            return f"confirm: the best measured again: {event['metric']:.6g}, drift {event['drift']:+.6g}"
        return f"confirm: the best measured again gave no result ({event.get('problem') or 'no metric'})"
    return None


def _figure(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else "?"


def parsed(line: bytes) -> dict[str, Any] | None:
    """One line of events.jsonl, or None for a line the process was killed while writing."""
    try:
        event = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _empty() -> dict[str, Any]:
    return {"recorded": [], "counts": {}, "tried": 0, "cost": 0, "tokens": 0, "unknown_cost": 0, "elapsed": None,
            "baseline": None, "top": None, "last": [], "keeps": {}, "last_keep": None, "warnings": [], "stop": None,
            "set_aside": [], "event_findings": [], "started": {}, "latest": {}, "under_way": [], "last_start_ts": None,
            "pending": []}


class Tally:
    """The fold. `feed` it the bytes of events.jsonl in order, `finish` it at their end; `s` (plain JSON) is
    what a summary saves."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.s: dict[str, Any] = state or _empty()
        self._fed = 0
        self._carry = b""
        self.tail = b""
        """The last bytes of the whole lines folded, which a summary holds to tell its file."""

    # -- feeding ------------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._fed += len(data)
        data = self._carry + data
        cut = data.rfind(b"\n") + 1
        self._carry = data[cut:]
        if cut:
            self.tail = (self.tail + data[:cut])[-_FINGERPRINT:]
        for line in data[:cut].splitlines():
            self.line(line)

    @property
    def covered(self) -> int:
        """Bytes of events.jsonl folded: its whole lines so far."""
        return self._fed - len(self._carry)

    def line(self, line: bytes) -> None:
        s = self.s
        if PHASE_TAIL in line[-PHASE_TAIL_ROOM:]:
            s["pending"].append(line.decode("utf-8", errors="replace"))
            return
        event = parsed(line)
        if event is None:
            return
        if event.get("event") == "attempt":
            self._attempt(*_row(event))
            s["pending"] = []
        else:
            self._commit_pending()
            if event.get("event") == "run_stopped":
                s["stop"] = event
            elif event.get("event") == "run_resumed":
                s["stop"] = None
        self._commit(event)

    def finish(self) -> None:
        """The end of the file: a last line without its newline, and the phases no row followed."""
        if self._carry:
            carry, self._carry = self._carry, b""
            self.line(carry)
        self._commit_pending()

    def _commit_pending(self) -> None:
        pending, self.s["pending"] = self.s["pending"], []
        for text in pending:
            event = parsed(text.encode("utf-8"))
            if event is not None:
                self._commit(event)

    def _commit(self, event: dict[str, Any]) -> None:
        """An event as the readers of RunRecord.events see it (phases that a row followed are not)."""
        s, name = self.s, event.get("event")
        if name in ("attempt", "run_started", "run_resumed"):
            s["last_start_ts"] = event.get("ts")
        if name in ("run_started", "run_resumed"):
            s["started"], s["latest"], s["under_way"] = {}, {}, []
        elif name == "phase" and type(event.get("iteration")) is int:
            iteration = event["iteration"]
            if not self.recorded(iteration):
                s["started"].setdefault(str(iteration), event.get("ts"))
                if iteration not in s["under_way"]:
                    s["under_way"].append(iteration)
            slot = event.get("slot", 0)
            if type(slot) is not int:
                raise Broken("a phase event with an odd slot")
            s["latest"][str(slot)] = {"iteration": iteration, "phase": event.get("phase", ""), "slot": slot}
        elif name == "attempt_set_aside" and type(event.get("iteration")) is int:
            for key, default in (("cost_usd", 0.0), ("tokens", 0)):
                if not (event.get(key) is None or _number(event.get(key))):
                    raise Broken("a set-aside attempt with an odd spend")
            s["set_aside"].append({k: event.get(k) for k in ("iteration", "how", "ref", "cost_usd", "tokens")})
        else:
            line = event_finding(event)
            if line is not None and not (name == "stall" and line in s["event_findings"]):
                s["event_findings"].append(line)

    def _attempt(self, row: dict[str, Any], tokens: int | None, elapsed: float) -> None:
        s, n = self.s, row["iteration"]
        if self.recorded(n):
            raise Broken(f"attempt {n} recorded twice")
        self._mark(n)
        s["started"].pop(str(n), None)
        if n in s["under_way"]:
            s["under_way"].remove(n)
        cost = row["cost_usd"]
        if cost is not None and cost:
            if cost != cost or cost in (float("inf"), float("-inf")):
                raise Broken("a cost that is not a number")
            numerator, denominator = cost.as_integer_ratio()
            s["cost"] += numerator * (_SCALE // denominator)
        s["tokens"] += tokens or 0
        s["elapsed"] = elapsed if s["elapsed"] is None else max(s["elapsed"], elapsed)
        if n > 0:
            s["tried"] += 1
            s["counts"][row["verdict"]] = s["counts"].get(row["verdict"], 0) + 1
            s["unknown_cost"] += cost is None
        else:
            s["baseline"] = row
        if s["top"] is None or n > s["top"]["iteration"]:
            s["top"] = row
        last = s["last"]
        last.insert(bisect.bisect([r["iteration"] for r in last], n), row)
        del last[:-LAST_SHOWN]
        if row["verdict"] in ("baseline", "keep"):
            if s["last_keep"] is None or n > s["last_keep"]["iteration"]:
                s["last_keep"] = row
            if row["commit"] is not None:
                known = s["keeps"].get(row["commit"])
                if known is None or n > known["iteration"]:
                    s["keeps"][row["commit"]] = row
        if row["warning"]:
            s["warnings"].append([n, row["warning"]])

    def _mark(self, n: int) -> None:
        """Add `n` to the recorded iterations, kept as [first, last] ranges (one range in a plain run)."""
        ranges = self.s["recorded"]
        at = bisect.bisect(ranges, [n, n])
        if at and ranges[at - 1][1] == n - 1:
            ranges[at - 1][1] = n
            if at < len(ranges) and ranges[at][0] == n + 1:
                ranges[at - 1][1] = ranges.pop(at)[1]
        elif at < len(ranges) and ranges[at][0] == n + 1:
            ranges[at][0] = n
        else:
            ranges.insert(at, [n, n])

    def recorded(self, n: int) -> bool:
        ranges = self.s["recorded"]
        at = bisect.bisect(ranges, [n, float("inf")])
        return bool(at) and ranges[at - 1][0] <= n <= ranges[at - 1][1]

    # -- what the readers ask -----------------------------------------------------------------------------
    def kept(self) -> dict[str, Any] | None:
        """The kept state the branch points at: the latest keep whose commit the last row's kept_commit names,
        else the latest keep (or the baseline), as RunRecord.kept reads it."""
        s = self.s
        head = s["top"]["kept_commit"] if s["top"] else ""
        return s["keeps"].get(head) if head and head in s["keeps"] else s["last_keep"]

    def cost_usd(self) -> float:
        return self.s["cost"] / _SCALE


# -- the summary file ---------------------------------------------------------------------------------------
def load(run_dir: str) -> Tally:
    """The fold of a run's whole events.jsonl: its summary and the lines after it, or every line."""
    with open(os.path.join(run_dir, "events.jsonl"), "rb") as stream:
        tally = _from_summary(run_dir, stream)
        if tally is None:
            tally = Tally()
            stream.seek(0)
        tally.feed(stream.read())
    return tally


def _from_summary(run_dir: str, stream: Any) -> Tally | None:
    """The summary's fold, `stream` left where it stops; None unless it matches the file."""
    try:
        with open(os.path.join(run_dir, SUMMARY_FILE), "rb") as summary:
            saved = json.loads(summary.read())
        covered, tail, state = saved["covered"], saved["tail"].encode("latin-1"), saved["state"]
        if (saved.get("version") != _VERSION or type(covered) is not int or not isinstance(state, dict)
                or state.keys() != _empty().keys()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return None
    if len(tail) != min(covered, _FINGERPRINT) or (covered and not tail.endswith(b"\n")):
        return None
    stream.seek(covered - len(tail))
    if stream.read(len(tail)) != tail:
        return None
    tally = Tally(state)
    tally._fed, tally.tail = covered, tail
    return tally


def save(run_dir: str, tally: Tally) -> None:
    """Write the summary of what `tally` folded, whole or not at all (a reader never sees half of one)."""
    path = os.path.join(run_dir, SUMMARY_FILE)
    fresh = f"{path}.{os.getpid()}.tmp"
    data = {"version": _VERSION, "covered": tally.covered, "tail": tally.tail.decode("latin-1"), "state": tally.s}
    with open(fresh, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(data, separators=(",", ":")))
    os.replace(fresh, path)


# -- the budget ---------------------------------------------------------------------------------------------
BUDGET_FILE = "budget.json"
"""The goal's budget as the run started with it (iterations, time in seconds, tokens, usd; null: no limit)."""
_BUDGET_KEYS = ("iterations", "time", "tokens", "usd")


def save_budget(run_dir: str, budget: Any) -> None:
    """Write the budget status shows (so it reads without the goal's models); `budget` has their attributes.
    A write that fails is let go: status then reads the budget from goal.yaml, the slow way."""
    figures = {key: getattr(budget, key) for key in _BUDGET_KEYS}
    try:
        with open(os.path.join(run_dir, BUDGET_FILE), "w", encoding="utf-8") as stream:
            stream.write(json.dumps(figures) + "\n")
    except OSError:
        pass


def saved_budget(run_dir: str) -> dict[str, Any] | None:
    """The budget save_budget wrote, or None (a run from before it, or a file that does not read)."""
    try:
        with open(os.path.join(run_dir, BUDGET_FILE), "rb") as stream:
            figures = json.loads(stream.read())
    except (OSError, ValueError):
        return None
    if not (isinstance(figures, dict) and set(figures) == set(_BUDGET_KEYS)
            and all(value is None or _number(value) for value in figures.values())):
        return None
    return figures
