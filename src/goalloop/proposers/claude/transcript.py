"""The record of an attempt: attempts/NNNN/claude.jsonl, and the lessons kept in run_dir/notes.md."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

TRANSCRIPT_FILE = "claude.jsonl"
NOTES_FILE = "notes.md"
NOTES_SHOWN = 30

log = structlog.wrap_logger(
    structlog.PrintLogger(sys.stderr),
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%H:%M:%S"),
        structlog.dev.ConsoleRenderer(colors=False),
    ],
)


class Transcript:
    """attempts/NNNN/claude.jsonl: the conversation, each reply's usage and cost, waits and warnings."""

    def __init__(self, path: Path) -> None:
        self._stream = open(path, "a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._stream.write(json.dumps({"kind": kind, "at": at, **fields}, default=str) + "\n")
        self._stream.flush()

    def warn(self, event: str, **fields: Any) -> None:
        """Tell the person at the terminal (stderr) and keep it in the transcript."""
        log.warning(event, **fields)
        self.write(event, **fields)

    def close(self) -> None:
        self._stream.close()


def read_notes(run_dir: Path) -> str:
    try:
        lines = (run_dir / NOTES_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-NOTES_SHOWN:] if line.strip())


_NOTES_LOCK = threading.Lock()


def _append_note(run_dir: Path, iteration: int, lesson: str) -> None:
    with _NOTES_LOCK, open(run_dir / NOTES_FILE, "a", encoding="utf-8") as notes:
        notes.write(f"- attempt {iteration}: {lesson}\n")
