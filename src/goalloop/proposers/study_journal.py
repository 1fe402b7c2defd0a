"""The search proposer's study journal (`runs/<run-id>/search.journal`), for its one writer, and its storage.

Optuna's own file backend is built for many processes sharing a file: every storage call re-opens and
re-reads the file, and every write takes a lock file and is fsynced, four times an attempt. A run has
one writer (the run lock says so), so this backend reads the file once, keeps the log in memory, and
appends each write to a descriptor it holds open. The lines are Optuna's own journal format, so the file
opens with `JournalFileBackend` as well.

Writes are not fsynced: a killed process loses nothing (the kernel has the bytes), and after a power cut
the ledger, which is synced, is the record: a resumed run closes from the ledger any trial the journal
left open, and a trial the journal lost is simply not in the study. A torn last line is cut off on open.

`RunStudyStorage` is Optuna's JournalStorage but for one question: every `study.ask()` looks for a waiting
(enqueued) trial by listing every trial of the study, 10,000 of them at attempt 10,000. It keeps the ids of
its waiting trials as they change instead, and answers that question from them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState


class SingleWriterJournal(BaseJournalBackend):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        with open(self._fd, "rb", closefd=False) as stream:
            data = stream.read()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):
            os.ftruncate(self._fd, len(whole))
        self._logs: list[dict[str, Any]] = [json.loads(line) for line in whole.splitlines() if line.strip()]

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = [json.dumps(log, separators=(",", ":")) for log in logs]
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        before = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:  # a full disk: cut the part written back off, so no line is ever left torn
            os.ftruncate(self._fd, before)
            raise
        self._logs.extend(json.loads(line) for line in lines)  # what a reader of the file gets back

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RunStudyStorage(JournalStorage):
    """A JournalStorage that finds its waiting trials without listing every trial (see the module's text)."""

    def __init__(self, backend: BaseJournalBackend) -> None:
        super().__init__(backend)
        self._waiting: dict[int, set[int]] = {}
        """Study id -> ids of its waiting trials, from one listing of its trials when first asked."""

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if not (isinstance(states, tuple) and states == (TrialState.WAITING,)):
            return super().get_all_trials(study_id, deepcopy, states)
        if study_id not in self._waiting:
            self._waiting[study_id] = {t._trial_id for t in super().get_all_trials(study_id, False, states)}
        waiting = [t for t in map(self.get_trial, sorted(self._waiting[study_id])) if t.state == TrialState.WAITING]
        self._waiting[study_id] = {t._trial_id for t in waiting}
        return copy.deepcopy(waiting) if deepcopy else waiting

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is not None and template_trial.state == TrialState.WAITING:  # enqueued: list afresh
            self._waiting.clear()
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if state == TrialState.WAITING:
            self._waiting.clear()
        return changed
