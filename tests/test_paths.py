"""Files a goal makes goalloop read for the prompt: regular files inside the root, read up to a cap, never
blocking. A proposer can leave a FIFO, a symlink out or a huge file at a context path in its worktree; the
next prompt must still be built at once and hold none of what lies outside."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from goalloop.goal.paths import read_inside
from goalloop.prompt import CONTEXT_FILE_BYTES


def read_soon(root: Path, rel: str) -> list[str | None]:
    """read_inside in a thread; a read still blocked after 10 s leaves the list empty."""
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(read_inside(root, rel, CONTEXT_FILE_BYTES)), daemon=True)
    thread.start()
    thread.join(10)
    return got


def test_a_fifo_at_a_context_path_is_not_read_and_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "notes.md")
    assert read_soon(tmp_path, "notes.md") == [None]


def test_a_symlink_out_of_the_worktree_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "wt").mkdir()
    os.symlink("/etc/passwd", tmp_path / "wt" / "notes.md")
    os.symlink("/dev/zero", tmp_path / "wt" / "zero.md")
    assert read_soon(tmp_path / "wt", "notes.md") == [None]
    assert read_soon(tmp_path / "wt", "zero.md") == [None]
    assert read_soon(tmp_path / "wt", "../wt/../../etc/passwd") == [None]


def test_a_huge_context_file_is_read_only_up_to_the_cap(tmp_path: Path) -> None:
    with open(tmp_path / "big.md", "wb") as stream:
        stream.truncate(1 << 30)  # 1 GiB, sparse
    got = read_soon(tmp_path, "big.md")
    assert got and got[0] is not None and len(got[0]) == CONTEXT_FILE_BYTES
    assert CONTEXT_FILE_BYTES <= 200_001
