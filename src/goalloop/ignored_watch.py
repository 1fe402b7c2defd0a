"""What the proposer did to files git ignores that were already there: its check must not read them. An
attempt's commit never holds an ignored file, so a score such a file changed could not be reproduced from
the commit.

What a check leaves that git ignores (`__pycache__/`, `.pytest_cache/`, a build folder, a venv it made)
stays for the next check, as `git clean` leaves it; a new ignored path the proposer makes is found by the
ignored listing itself (workspace.commit_attempt). Not found by it: an ignored file the check made that the
proposer rewrites (a forged `.pyc`), and a new file inside an ignored folder, which the listing shows as
one entry (`cache/`). So after every reset the files under the listing's entries are stamped (mode, size,
mtime, ctime, inode), and before the check they are stamped again: every file that is new or whose stamp
differs is the proposer's, and is removed. A rewrite cannot hide: no program can set a ctime back.

Past WATCH_LIMIT stamped entries (a `node_modules/`), or where a folder cannot be read, nothing is stamped
and the listing alone applies, for the rest of the run (workspace.py does not walk it again).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from goalloop.stat_tree import Stats, add_under, is_folder, stat_of

WATCH_LIMIT = 10_000
"""The most files and folders stamped under the ignored entries; past it, none are."""


@dataclass(frozen=True)
class IgnoredStamp:
    entries: tuple[str, ...]
    """The ignored listing's entries (a folder ends in "/"), as the worktree was reset."""
    stats: Stats
    """The stat of each file and folder at or under them."""


def stamp(worktree: Path, entries: Iterable[str]) -> IgnoredStamp | None:
    """The stamp of everything at or under `entries`; None past WATCH_LIMIT or where a folder cannot be read."""
    listed = tuple(sorted(entries))
    stats = _stats(worktree, listed)
    return None if stats is None else IgnoredStamp(listed, stats)


def rewritten(worktree: Path, before: IgnoredStamp) -> list[str]:
    """What was made or rewritten under `before`'s entries since it was taken, outermost first: a new folder
    stands for everything in it. Folders themselves are not compared (adding a file moves its folder's
    times), nor are deletions (a missing cache makes a check do more, not less). When the entries now hold
    more than WATCH_LIMIT, or one cannot be read, all of them are named: which part changed cannot be told."""
    after = _stats(worktree, before.entries)
    if after is None:
        return [entry.rstrip("/") for entry in before.entries if os.path.lexists(worktree / entry.rstrip("/"))]
    found: list[str] = []
    for path in sorted(after):
        if any(path.startswith(f"{parent}/") for parent in found):
            continue
        old, new = before.stats.get(path), after[path]
        if old is None or (not is_folder(new) and old != new) or is_folder(old) != is_folder(new):
            found.append(path)
    return found


def _stats(worktree: Path, entries: tuple[str, ...]) -> Stats | None:
    found: Stats = {}
    folders = []
    for entry in entries:
        rel = entry.rstrip("/")
        try:
            found[rel] = stat_of(os.lstat(worktree / rel))
        except FileNotFoundError:
            continue
        except OSError:
            return None
        if is_folder(found[rel]):
            folders.append(rel)
    return found if add_under(worktree, folders, found, WATCH_LIMIT) else None
