"""The stat of every file and folder under some folders, to compare with a later one: two equal stamps mean
nothing there was created, deleted or rewritten in between. A write moves a file's ctime, an entry added or
removed moves its folder's, and no program can set a ctime back (only the clock can)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

Stats = dict[str, tuple[int, ...]]
"""Path (relative, `/`-separated) -> (mode, size, mtime, ctime, inode)."""


def stat_of(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def is_folder(stats: tuple[int, ...]) -> bool:
    return stat.S_ISDIR(stats[0])


def add_under(root: Path, folders: list[str], found: Stats, limit: int, skip: frozenset[str] = frozenset()) -> bool:
    """Add to `found` the stat of everything under `folders` (relative to `root`; "" is `root` itself), never
    following a symlink and leaving out the paths in `skip`. False, part-way, past `limit` entries or where
    something cannot be read; an entry that vanished meanwhile is left out."""
    folders = list(folders)
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(root / folder if folder else root) as listing:
                children = list(listing)
        except OSError:
            return False
        for child in children:
            rel = f"{folder}/{child.name}" if folder else child.name
            if rel in skip:
                continue
            try:
                info = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError:
                return False
            found[rel] = stat_of(info)
            if len(found) > limit:
                return False
            if child.is_dir(follow_symlinks=False):
                folders.append(rel)
    return True
