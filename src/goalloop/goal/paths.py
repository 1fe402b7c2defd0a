"""Paths a goal file names: inside the repository, and read only as regular files of bounded size.

Every path key (context, instructions_file, editable, protected, check.files, holdout.files, a search knob's
file, a scripted step's files) is refused when it is absolute or climbs out with `..`; the files the goal
makes goalloop read (context, instructions_file) must also be regular files that stay inside the repository
once symlinks are followed. They are opened without blocking, so a FIFO never hangs a run, and read up to
a cap, so /dev/zero or a huge file never fills memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator

from goalloop.goal.values import Mistake

MAX_INSTRUCTIONS_BYTES = 1 << 20
"""The largest instructions_file goalloop reads."""


def inside_repository(text: str) -> str:
    """Validator of a path or glob relative to the repository's top folder."""
    if text.startswith(("/", "~")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/"):
        relative = text.lstrip("/~\\").split(":", 1)[-1].lstrip("\\/")
        raise Mistake(
            f"'{text}' is an absolute path (on this machine, not in the repository); goalloop reads and guards "
            "only files inside the repository",
            fix=f"write it relative to the repository's top folder, such as {relative or 'src/**'}",
        )
    if _climbs_out(text):
        raise Mistake(f"'{text}' points outside the repository (through ..)",
                      fix="name a file inside the repository, relative to its top folder")
    return text


def inside_repository_glob(text: str) -> str:
    """Validator of a gitignore-style glob: a leading / anchors it at the repository's top folder (`/score.py`),
    unless what follows names a folder at the root of this machine (`/etc/**`), which is refused as absolute;
    and git must read it as a pattern (`tests\\` escapes nothing)."""
    first = text.lstrip("/").split("/", 1)[0]
    if text.startswith("/") and not text.startswith("//") and first and not Path("/", first).exists():
        inside_repository(text.lstrip("/"))
    else:
        inside_repository(text)
    import pathspec

    try:
        pathspec.PathSpec.from_lines("gitignore", [text])
    except ValueError:
        raise Mistake(f"'{text}' is not a pattern git can read", fix=(
            "drop the backslash at the end: a backslash escapes the character after it" if text.endswith("\\")
            else "write it as a line of .gitignore: / between folders, a backslash only before a character to "
            "take literally")) from None
    return text


def _climbs_out(text: str) -> bool:
    depth = 0
    for part in PurePosixPath(text.replace("\\", "/")).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def not_absolute(text: str) -> str:
    """Validator of a path relative to the goal file (instructions_file); where it leads is checked against
    the repository once that is known (`confine`)."""
    if text.startswith(("/", "~")):
        raise Mistake(
            f"'{text}' is an absolute path; instructions_file is read relative to the goal file, inside the "
            "repository",
            fix="give a path relative to the goal file, or write the text under instructions:",
        )
    return text


RepoPath = Annotated[str, AfterValidator(inside_repository)]
"""A path relative to the repository's top folder, never leaving it."""
RepoGlob = Annotated[str, AfterValidator(inside_repository_glob)]
"""A gitignore-style glob inside the repository (a leading / anchors it at the top folder)."""
GoalPath = Annotated[str, AfterValidator(not_absolute)]
"""A path relative to the goal file (it must still lead into the repository: see `check_named_files`)."""


class Unreadable(Exception):
    """A file a goal names that goalloop will not read: why, and the fix."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why = why
        self.fix = fix


def confine(path: Path, roots: list[Path]) -> Path:
    """`path` with symlinks followed, if it lies inside one of `roots`; else Unreadable."""
    real = Path(os.path.realpath(path))
    if not any(real == r or real.is_relative_to(r) for r in (Path(os.path.realpath(root)) for root in roots)):
        raise Unreadable(f"{path} leads outside the repository (to {real})",
                         fix="name a file inside the repository; goalloop sends what it reads to the proposer")
    return real


def check_regular(path: Path) -> None:
    """Unreadable unless `path` is missing or a regular file (not a folder, FIFO, socket or device)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc.strerror}", fix="check the path and its permissions") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket")
        raise Unreadable(f"{path} is not a regular file: it is {kind}", fix="name a regular file (text) here")


def read_capped(path: Path, limit: int) -> bytes:
    """The first `limit` + 1 bytes of the regular file `path`: opened without blocking (a FIFO made after
    validation cannot hang), refused when it is not a regular file. Raises OSError or Unreadable."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable(f"{path} is not a regular file", fix="name a regular file (text) here")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_inside(root: Path, rel: str, limit: int) -> str | None:
    """The text of repository file `rel` under `root`, at most `limit` bytes of it (decoded with replacement);
    None when it is missing, not a regular file, or leads outside `root`."""
    try:
        real = confine(root / rel, [root])
        return read_capped(real, limit)[:limit].decode("utf-8", errors="replace")
    except (OSError, Unreadable):
        return None


def check_named_files(goal: Any, root: Path) -> None:
    """Refuse, at its line, a context file or instructions_file that leads outside the repository (a symlink,
    `..` from the goal file) or is not a regular file (a FIFO, a folder, a device). A context file that does
    not exist yet is allowed: the proposer is shown that it does not."""
    for index, rel in enumerate(goal.context):
        try:
            check_regular(confine(root / rel, [root]))
        except Unreadable as exc:
            raise goal.error(("context", index), exc.why, fix=exc.fix) from None
    if goal.instructions_file is not None:
        path = goal.source.parent / goal.instructions_file
        try:
            check_regular(confine(path, [root, goal.source.parent]))
        except Unreadable as exc:
            raise goal.error(("instructions_file",), exc.why, fix=exc.fix) from None
