"""Where the command line writes: `out` (stdout) and `err` (stderr), rich consoles that never guess at
highlighting and never wrap what a user may copy (paths, commands); and `Home`, the folder a command works in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from goalloop.workspace import RunLock

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def markup(chunks: list[str | tuple[str, str]]) -> str:
    """A line of plain and (text, style) chunks as rich markup, every text escaped."""
    return "".join(escape(chunk) if isinstance(chunk, str) else f"[{chunk[1]}]{escape(chunk[0])}[/]" for chunk in chunks)


@dataclass(frozen=True)
class Home:
    """The folder holding runs/ (the records) and workspaces/ (the worktrees)."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def workspaces(self) -> Path:
        return self.root / "workspaces"

    def prepare(self) -> None:
        """Create runs/ and workspaces/, each ignoring itself so they never show in `git status`."""
        for folder in (self.runs, self.workspaces):
            if not folder.exists():
                folder.mkdir(parents=True)
                (folder / ".gitignore").write_text("*\n", encoding="utf-8")

    def goal_lock(self, goal_name: str) -> RunLock:
        from goalloop.workspace import RunLock

        return RunLock(self.runs / ".locks" / f"{goal_name}.lock", f"goal '{goal_name}'")
