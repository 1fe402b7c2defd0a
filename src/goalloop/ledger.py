"""The record of a run, `runs/<run-id>/`, written append-only and read back for status, report and resume.

    run.json            what the run is: goal, repo, base, branch, worktree (written once)
    goal.yaml           the goal file as it was loaded
    events.jsonl        one JSON event per line (structlog): run_started, attempt, paused, run_stopped...
    results.tsv         one row per attempt, baseline first (iteration, commit, metric, verdict, seconds,
                        cost_usd, description, parent: the attempt it was proposed from)
    attempts/NNNN/      prompt.md, diff.patch, the check's and the proposer's full output
    budget.json         the budget status shows (tally.save_budget), written at the start and on resume
    standing.json       a summary of events.jsonl kept as the events are written (tally.py), for status

Every line is written at once (a killed run loses none) and fsynced at once or, for attempt rows, within
half a second, in batches (line_file.py); a row is on disk before the branch moves past it, so after a
power cut the ledger is never behind git about a kept attempt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import time
from collections.abc import Sequence
from itertools import islice
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator, Literal

from goalloop import tally
from goalloop.errors import UsageError
from goalloop.interrupts import interrupts_held
from goalloop.line_file import LineFile, Sync

Verdict = Literal["baseline", "keep", "discard", "crash", "rejected"]
UNSYNCED_EVENTS = frozenset({"phase"})
"""Progress that a power cut may lose (what the attempt under way is doing): written at once, and synced
with the next event or row that is."""
RESULTS_COLUMNS = ["iteration", "commit", "metric", "verdict", "seconds", "cost_usd", "description"]
SET_ASIDE_EVENT = "attempt_set_aside"
"""The event a resume writes for an attempt stopped before its verdict: set aside, proposed again."""
TREE_COLUMNS = [*RESULTS_COLUMNS, "parent"]
"""A tree search's results.tsv: one column more at the end, the attempt each row was proposed from. Columns
only ever grow at the end, so readers of the first seven keep working; a run keeps the layout it began with."""


@dataclass
class AttemptRecord:
    """One row of the ledger: an attempt (or the baseline, iteration 0) and its verdict."""

    iteration: int
    verdict: Verdict
    description: str
    commit: str | None = None
    metric: float | None = None
    passed: bool = False
    seconds: float = 0.0
    cost_usd: float | None = 0.0
    """None: the proposer reported no cost (shown "not tracked")."""
    tokens: int | None = 0
    """None: the proposer reported no token count."""
    added_lines: int = 0
    reason: str = ""
    """Why it was rejected, crashed or failed to propose; the stall detector reads this."""
    kept_commit: str = ""
    """The branch head after this attempt."""
    elapsed: float = 0.0
    """Wall-clock seconds the run had used when this row was written (resumes included)."""
    samples: list[float] = field(default_factory=list)
    """Every measurement of the metric when it was measured more than once (`metric` is their median)."""
    holdout: float | None = None
    """The holdout check's metric, for the baseline and kept attempts."""
    warning: str = ""
    """Something a person should look at, e.g. a keep that made the holdout worse."""
    figures: dict[str, float] = field(default_factory=dict)
    """The guarded figures the check printed (e.g. "tests run"), for the baseline and kept attempts."""
    holdout_samples: list[float] = field(default_factory=list)
    """Every measurement of the holdout when it was measured more than once (`holdout` is their median)."""
    parent: int | None = None
    """The attempt whose kept state this one was proposed from (0: the baseline); None for the baseline, for
    a lost attempt whose parent is not known, and in runs recorded before the column existed."""

    @property
    def checked(self) -> bool:
        """Whether the check ran on this attempt (not for a rejection or a failed or lost proposal)."""
        return tally.checked(vars(self))

    def result_text(self, metric_goal: bool) -> str:
        """The result as a person reads it: the metric, pass/fail, or '-' when the check did not run."""
        return tally.result_text(vars(self), metric_goal)

    def tsv_row(self) -> list[str]:
        return [
            str(self.iteration),
            (self.commit or "")[:12],
            "" if self.metric is None else f"{self.metric:.6g}",
            self.verdict,
            f"{self.seconds:.1f}",
            "" if self.cost_usd is None else f"{self.cost_usd:.4f}",
            " ".join(self.description.split())[:300],
        ]


class History(Sequence[AttemptRecord]):
    """A run's rows as they stood at one moment, without copying them: the first `len` rows of a list that only
    grows at its end (handing a proposer a copy of 10,000 rows every attempt would cost what the rows number)."""

    __slots__ = ("_rows", "_length")

    def __init__(self, rows: list[AttemptRecord]) -> None:
        self._rows, self._length = rows, len(rows)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        if isinstance(index, slice):
            return tuple(self._rows[: self._length][index])
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._rows[index]

    def __iter__(self) -> Iterator[AttemptRecord]:
        return islice(self._rows, self._length)


@dataclass
class RunMeta:
    """What a run is, written once when it starts."""

    run_id: str
    goal_name: str
    goal_path: str
    repo: str
    base_commit: str
    branch: str
    worktree: str
    created_at: str
    metric_goal: bool
    direction: str
    target: float | None


@dataclass
class RunRecord:
    """A run as read back from its folder."""

    meta: RunMeta
    attempts: list[AttemptRecord]
    stop: dict[str, Any] | None
    """The last run_stopped event; None if the run never stopped cleanly (alive, or killed)."""
    run_dir: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every event in order, but the `phase` events an attempt row followed (what an attempt was doing
    before it was recorded is of no use once it is, and reading them would cost most of a long run's time)."""

    @property
    def baseline(self) -> AttemptRecord | None:
        return self.attempts[0] if self.attempts and self.attempts[0].iteration == 0 else None

    @property
    def kept(self) -> AttemptRecord | None:
        """The kept state the run's branch points at (the baseline if nothing was kept): the latest keep, or
        with a tree strategy the best node, read off the last row's `kept_commit`."""
        kept = [a for a in self.attempts if a.verdict in ("baseline", "keep")]
        head = self.attempts[-1].kept_commit if self.attempts else ""
        return next((a for a in reversed(kept) if head and a.commit == head), kept[-1] if kept else None)

    @property
    def iterations(self) -> int:
        return sum(1 for a in self.attempts if a.iteration > 0)

    @property
    def cost_usd(self) -> float:
        return math.fsum(a.cost_usd or 0.0 for a in self.attempts)

    @property
    def tokens(self) -> int:
        return sum(a.tokens or 0 for a in self.attempts)

    @property
    def elapsed(self) -> float:
        return max((a.elapsed for a in self.attempts), default=0.0)

    @property
    def finished(self) -> bool:
        return self.stop is not None and self.stop.get("exit_code") in (0, 1)

    @property
    def state(self) -> str:
        if self.stop is None:
            return "running or killed"
        return str(self.stop.get("state", "stopped"))


class _DurableLines:
    """A structlog logger that appends each rendered event as a line, synced as `sync` says (and echoed)."""

    def __init__(self, file: LineFile, echo: IO[str] | None, sync: Sync = Sync.NOW) -> None:
        self._file = file
        self._echo = echo
        self._sync = sync

    def msg(self, message: str) -> None:
        self._file.append(message + "\n", self._sync)
        if self._echo is not None:
            self._echo.write(message + "\n")
            self._echo.flush()

    info = warning = error = debug = msg


class Ledger:
    """Writes a run's folder. One Ledger per process; the run lock guarantees a single writer."""

    def __init__(self, run_dir: Path, echo: IO[str] | None = None) -> None:
        """`echo`: also write every event there (for `--log-format json`)."""
        self.run_dir = run_dir
        self._tally: tally.Tally | None = None
        self._saved_at = 0.0
        if (run_dir / "events.jsonl").exists():
            try:
                self._tally = tally.load(str(run_dir))
            except Exception:  # noqa: BLE001 (only a summary: a run is never stopped by one; status reads it all)
                pass
        else:
            self._tally = tally.Tally()
        self._events_file = LineFile(run_dir / "events.jsonl", after=self._fold)
        self._results_file = LineFile(run_dir / "results.tsv")
        if self._results_file.size() == 0:
            self._write_tsv(RESULTS_COLUMNS)
        self._columns = _header(run_dir / "results.tsv")
        import structlog  # only a writer needs it: `status` reads a ledger without paying for its import

        processors = [structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                      structlog.processors.JSONRenderer(default=str)]
        self.log = structlog.wrap_logger(_DurableLines(self._events_file, echo), processors=processors)
        self._row_log = structlog.wrap_logger(_DurableLines(self._events_file, echo, Sync.SOON), processors=processors)
        self._progress_log = structlog.wrap_logger(_DurableLines(self._events_file, echo, Sync.WITH_NEXT),
                                                   processors=processors)

    @classmethod
    def create(cls, run_dir: Path, meta: RunMeta, goal_text: str, echo: IO[str] | None = None) -> Ledger:
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "attempts").mkdir()
        (run_dir / "goal.yaml").write_text(goal_text, encoding="utf-8")
        (run_dir / "run.json").write_text(json.dumps(asdict(meta), indent=2) + "\n", encoding="utf-8")
        return cls(run_dir, echo)

    def attempt_dir(self, iteration: int) -> Path:
        path = self.run_dir / "attempts" / f"{iteration:04d}"
        try:
            os.mkdir(path)  # one system call when it exists, as it does for all but the first of an attempt's
        except FileExistsError:
            if not path.is_dir():
                raise
        except FileNotFoundError:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def event(self, name: str, **fields: Any) -> None:
        (self._progress_log if name in UNSYNCED_EVENTS else self.log).info(name, **fields)

    def record(self, attempt: AttemptRecord, wait: bool = True) -> None:
        """Append the attempt to results.tsv and events.jsonl; on disk when this returns, or with `wait`
        False within line_file.SOON_SECONDS, with the rows written meanwhile, while the caller goes on.
        Before the branch moves past it, a row must be on disk: record it waiting, or call `sync` first.

        An interrupt (Ctrl-C, SIGTERM) that arrives between the two writes waits until both are done, so the
        two files never disagree about an attempt."""
        with interrupts_held(raise_after=True):
            row = attempt.tsv_row() + ["" if attempt.parent is None else str(attempt.parent)]
            self._write_tsv(row[: len(self._columns)], Sync.SOON)
            self._row_log.info("attempt", **asdict(attempt))
        if wait:
            self.sync()

    def sync(self) -> None:
        """Return once every row and event written so far is on disk."""
        self._results_file.sync()
        self._events_file.sync()

    def drop_rows_not_in(self, iterations: set[int]) -> list[int]:
        """Remove the results.tsv rows of attempts events.jsonl does not hold, and return their numbers.

        Only a kill -9 between the two writes of `record` leaves one (the row is written first): the
        attempt is then handled again on resume, and would otherwise get a second row."""
        path = self.run_dir / "results.tsv"
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t"))
        header, body = rows[0], rows[1:]
        kept = [row for row in body if row and row[0].isdigit() and int(row[0]) in iterations]
        if len(kept) == len(body):
            return []
        dropped = [int(row[0]) for row in body if row not in kept and row and row[0].isdigit()]
        text = io.StringIO()
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows([header, *kept])
        fresh = path.with_name(f"{path.name}.fixing")
        with open(fresh, "w", encoding="utf-8") as out:
            out.write(text.getvalue())
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, path)  # never a moment without the rows that stay
        self._results_file.close()
        self._results_file = LineFile(path)
        return dropped

    def use_columns(self, columns: list[str]) -> None:
        """Give results.tsv these columns (more of them at the end); only before its first row."""
        path = self.run_dir / "results.tsv"
        if self._columns == columns or len(path.read_bytes().splitlines()) > 1:
            return
        os.ftruncate(self._results_file.fd, 0)
        self._write_tsv(columns)
        self._columns = list(columns)

    def _write_tsv(self, row: list[str], sync: Sync = Sync.NOW) -> None:
        line = io.StringIO()
        csv.writer(line, delimiter="\t", lineterminator="\n").writerow(row)
        self._results_file.append(line.getvalue(), sync)

    def _fold(self, data: bytes) -> None:
        """Keep the run's standing (tally.py) as each event is written; save it every SAVE_EVERY seconds."""
        if self._tally is None:
            return
        try:
            self._tally.feed(data)
        except Exception:  # noqa: BLE001 (a line the fold cannot be sure of, tally.Broken, or a bug in it)
            self._tally = None
            return
        if time.monotonic() - self._saved_at >= tally.SAVE_EVERY:
            self._save_tally()

    def _save_tally(self) -> None:
        if self._tally is not None:
            try:
                tally.save(str(self.run_dir), self._tally)
            except Exception:  # noqa: BLE001 (only a summary: status reads the lines after an older one)
                pass
            self._saved_at = time.monotonic()

    def close(self) -> None:
        if self._events_file.fd >= 0:
            self._save_tally()
        self._events_file.close()
        self._results_file.close()


def _header(path: Path) -> list[str]:
    """The columns of an existing results.tsv: a run keeps the layout it began with."""
    with open(path, encoding="utf-8", errors="replace") as stream:
        header = stream.readline().rstrip("\n").split("\t")
    return header if header[: len(RESULTS_COLUMNS)] == RESULTS_COLUMNS else list(RESULTS_COLUMNS)


def new_run_id(goal_name: str, runs_dir: Path) -> str:
    """`<goal>-<date>-<time>-<random>`: unique even for runs started in the same second from two --home
    folders on one repository (the branch `goalloop/<run-id>` is shared by all of them)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        run_id = f"{goal_name}-{stamp}-{secrets.token_hex(3)}"
        if not (runs_dir / run_id).exists():
            return run_id


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run(run_dir: Path) -> RunRecord:
    """Read a run folder back. Tolerates a half-written last line (the process died mid-write)."""
    try:
        meta = RunMeta(**json.loads((run_dir / "run.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{run_dir} is not a goalloop run folder ({exc})", fix="list runs with `goalloop runs`") from None
    attempts: dict[int, AttemptRecord] = {}
    stop = None
    events: list[dict[str, Any]] = []
    phases: list[bytes] = []
    """Phase events since the last attempt row, left unparsed until the end (the others are history)."""
    with open(run_dir / "events.jsonl", "rb") as stream:
        lines = stream.read().splitlines()
    for line in lines:
        if tally.PHASE_TAIL in line[-tally.PHASE_TAIL_ROOM:]:
            phases.append(line)
            continue
        event = tally.parsed(line)
        if event is None:
            continue
        name = event.get("event")
        if name == "attempt":
            record = _attempt_of(event)
            attempts[record.iteration] = record
            phases = []
        else:
            events += _parsed_all(phases)
            phases = []
            if name == "run_stopped":
                stop = event
            elif name == "run_resumed":
                stop = None
        events.append(event)
    events += _parsed_all(phases)
    return RunRecord(meta=meta, attempts=[attempts[n] for n in sorted(attempts)], stop=stop, run_dir=run_dir, events=events)


_ATTEMPT_FIELDS = frozenset(AttemptRecord.__dataclass_fields__)


def _parsed_all(lines: list[bytes]) -> list[dict[str, Any]]:
    return [event for event in map(tally.parsed, lines) if event is not None]


def _attempt_of(event: dict[str, Any]) -> AttemptRecord:
    fields = dict(event)
    del fields["event"]
    fields.pop("ts", None)
    if fields.keys() <= _ATTEMPT_FIELDS:
        return AttemptRecord(**fields)
    return AttemptRecord(**{k: v for k, v in fields.items() if k in _ATTEMPT_FIELDS})  # written by a newer version


def list_runs(runs_dir: Path) -> list[Path]:
    """Run folders under `runs_dir`, oldest first."""
    if not runs_dir.is_dir():
        return []
    found = [p for p in runs_dir.iterdir() if (p / "run.json").is_file()]
    return sorted(found, key=lambda p: ((p / "run.json").stat().st_mtime, p.name))


def find_run(runs_dir: Path, run_id: str | None) -> Path:
    """The folder of `run_id`, or of the latest run; a unique prefix of a run id is enough."""
    runs = list_runs(runs_dir)
    if not runs:
        raise UsageError(f"no runs under {runs_dir}", fix="start one with `goalloop run goals/<goal>.yaml`, or pass --home")
    if run_id is None:
        return runs[-1]
    exact = [p for p in runs if p.name == run_id]
    matches = exact or [p for p in runs if p.name.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run '{run_id}' under {runs_dir}", fix="see `goalloop runs` for the run ids")
    raise UsageError(
        f"'{run_id}' matches {len(matches)} runs: {', '.join(p.name for p in matches[:5])}",
        fix="give more of the run id",
    )
