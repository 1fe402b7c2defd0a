"""Committing an attempt whose changed files are known in advance (the search proposer's) straight into
git's object database: a blob a file, the trees above it, the commit, made in-process and stored through
gitdb (GitPython's object store). It replaces `add --all`, `write-tree`, `diff-tree` and `commit-tree`,
four processes and a scan of the worktree, which are most of what an attempt of a cheap check costs.

`commit_files` only computes: every object's bytes and name (git's SHA-1 of them), so the commit is known
at once; `store` writes them, which can then happen while the check runs.

Trees are read and written as raw bytes: every entry but the changed file's is copied byte for byte, so
names that are not UTF-8 survive. Only files that exist at the parent as regular files (mode 100644 or
100755) in a repository with SHA-1 names are handled; for anything else `commit_files` returns None and
the caller takes git's own path.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from gitdb import GitDB, IStream
from gitdb.exc import BadObject

REGULAR_MODES = (b"100644", b"100755")
SHA1_HEX = 40
GITDB_TEMP_FILE = re.compile(r"obj[a-z0-9_]{8}")
"""The name of the file gitdb writes an object into before renaming it into place (`tempfile.mkstemp`)."""
STALE_TEMP_SECONDS = 3600.0
READ_CACHE_BYTES = 8 << 20
"""The objects read last are kept up to this many bytes: an attempt after a discard reads the same parent
commit, trees and blobs as the one before it (objects never change: a name is its bytes' hash)."""


@dataclass(frozen=True)
class KnownCommit:
    sha: str | None
    """None: every file already held its new bytes at the parent (an empty change)."""
    old: dict[str, bytes]
    """Each changed file's bytes at the parent, to put the worktree back with."""
    executable: dict[str, bool]
    """Whether each changed file is executable (mode 100755) at the parent."""
    numstat: list[tuple[str, int, int]]
    """(path, lines added, lines deleted) per changed file."""
    patch: str
    objects: list[tuple[bytes, bytes]]
    """(kind, bytes) of every object the commit needs that `store` has not written yet."""


class ObjectWriter:
    """Reads trees and writes blobs, trees and commits in a repository's object database."""

    def __init__(self, common_dir: Path, identity: dict[str, str]) -> None:
        self._root = str(common_dir / "objects")
        self._db = GitDB(self._root)
        self._made: dict[bytes, tuple[bytes, bytes]] = {}
        """The objects of the commit being made: name -> (kind, bytes), read back from here."""
        self._read_before: dict[bytes, tuple[bytes, bytes]] = {}
        """Objects read from the database, oldest first, up to READ_CACHE_BYTES."""
        self._read_bytes = 0
        self._author = f"{identity['GIT_AUTHOR_NAME']} <{identity['GIT_AUTHOR_EMAIL']}>"
        self._committer = f"{identity['GIT_COMMITTER_NAME']} <{identity['GIT_COMMITTER_EMAIL']}>"

    def commit_files(self, parent: str, files: dict[str, bytes], message: str) -> KnownCommit | None:
        """Commit `parent`'s tree with each of `files` (path -> new bytes) replaced, on top of `parent`;
        nothing is written until `store(commit.objects)`."""
        if len(parent) != SHA1_HEX:
            return None
        self._made = {}
        root = _commit_tree(self._read(bytes.fromhex(parent), b"commit"))
        old: dict[str, bytes] = {}
        executable: dict[str, bool] = {}
        numstat: list[tuple[str, int, int]] = []
        patches: list[str] = []
        for path, new in sorted(files.items()):
            found = self._lookup(root, path)
            if found is None:
                return None
            mode, old_sha = found
            before = self._read(old_sha, b"blob")
            if before == new:
                continue
            new_sha = self._write(b"blob", new)
            root = self._replace(root, path.split("/"), new_sha)
            old[path], executable[path] = before, mode == b"100755"
            added, deleted, patch = _unified(path, mode.decode(), before, new, old_sha.hex(), new_sha.hex())
            numstat.append((path, added, deleted))
            patches.append(patch)
        if not old:
            return KnownCommit(None, {}, {}, [], "", [])
        stamp = _timestamp()
        body = (f"tree {root.hex()}\nparent {parent}\nauthor {self._author} {stamp}\n"
                f"committer {self._committer} {stamp}\n\n{message}\n")
        sha = self._write(b"commit", body.encode())
        made, self._made = self._reachable(sha), {}
        return KnownCommit(sha.hex(), old, executable, numstat, "".join(patches), made)

    def _reachable(self, commit: bytes) -> list[tuple[bytes, bytes]]:
        """The objects made for `commit` that it reaches (not the trees a second file's change replaced)."""
        found, trees = [self._made[commit]], [_commit_tree(self._made[commit][1])]
        while trees:
            tree = trees.pop()
            if tree not in self._made:
                continue
            found.append(self._made[tree])
            for _, _, mode, _, sha in _walk(self._made[tree][1]):
                if sha in self._made:
                    if mode == b"40000":
                        trees.append(sha)
                    else:
                        found.append(self._made[sha])
        return found

    def store(self, objects: list[tuple[bytes, bytes]]) -> None:
        """Write objects made by `commit_files` (each a loose object, as git writes one)."""
        for kind, data in objects:
            self._db.store(IStream(kind, len(data), BytesIO(data)))

    def _lookup(self, tree: bytes, path: str) -> tuple[bytes, bytes] | None:
        """(mode, sha) of the regular file at `path` under `tree`, or None."""
        *folders, name = path.encode().split(b"/")
        for folder in folders:
            entry = _entries(self._read(tree, b"tree")).get(folder)
            if entry is None or entry[0] != b"40000":
                return None
            tree = entry[1]
        entry = _entries(self._read(tree, b"tree")).get(name)
        return entry if entry is not None and entry[0] in REGULAR_MODES else None

    def _replace(self, tree: bytes, parts: list[str], blob: bytes) -> bytes:
        """The sha of `tree` with the file at `parts` pointing at `blob` (the trees above it rewritten)."""
        name, raw = parts[0].encode(), self._read(tree, b"tree")
        child = blob if len(parts) == 1 else self._replace(_entries(raw)[name][1], parts[1:], blob)
        return self._write(b"tree", _with_entry(raw, name, child))

    def _read(self, sha: bytes, kind: bytes) -> bytes:
        if sha in self._made:
            return self._made[sha][1]
        found = self._read_before.get(sha)
        if found is None:
            try:
                stream = self._db.stream(sha)
            except BadObject:  # gitdb keeps the packs it listed: after a `git gc` (a user's, an auto gc) look again
                self._db = GitDB(self._root)
                stream = self._db.stream(sha)
            found = (stream.type, stream.read())
            self._remember(sha, found)
        if found[0] != kind:
            raise ValueError(f"object {sha.hex()} is a {found[0].decode()}, not a {kind.decode()}")
        return found[1]

    def _remember(self, sha: bytes, found: tuple[bytes, bytes]) -> None:
        if len(found[1]) > READ_CACHE_BYTES // 4:
            return
        self._read_before[sha] = found
        self._read_bytes += len(found[1])
        while self._read_bytes > READ_CACHE_BYTES:
            oldest = next(iter(self._read_before))
            self._read_bytes -= len(self._read_before.pop(oldest)[1])

    def _write(self, kind: bytes, data: bytes) -> bytes:
        """The object's name; the object itself waits in `_made` for `store`."""
        sha = hashlib.sha1(b"%s %d\0" % (kind, len(data)) + data).digest()
        self._made[sha] = (kind, data)
        return sha


def _commit_tree(commit: bytes) -> bytes:
    first = commit.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        raise ValueError("a commit without a tree")
    return bytes.fromhex(first[5:].decode())


def _walk(tree: bytes) -> Iterator[tuple[int, int, bytes, bytes, bytes]]:
    """(start, end, mode, name, sha) of each entry of a raw tree."""
    at = 0
    while at < len(tree):
        space = tree.index(b" ", at)
        nul = tree.index(b"\0", space)
        yield at, nul + 21, tree[at:space], tree[space + 1:nul], tree[nul + 1:nul + 21]
        at = nul + 21


def _entries(tree: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    return {name: (mode, sha) for _, _, mode, name, sha in _walk(tree)}


def _with_entry(tree: bytes, name: bytes, sha: bytes) -> bytes:
    """The raw tree with entry `name`'s sha replaced (same mode, same place)."""
    for start, end, _, entry, _ in _walk(tree):
        if entry == name:
            return tree[:end - 20] + sha + tree[end:]
    raise KeyError(name)


def _timestamp() -> str:
    """Now as git writes it in a commit: seconds since the epoch and the local offset (`+0100`)."""
    now = time.time()
    offset = time.localtime(now).tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    return f"{int(now)} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def _unified(path: str, mode: str, old: bytes, new: bytes, old_sha: str, new_sha: str) -> tuple[int, int, str]:
    """(added, deleted, patch) of one file's change, as `git diff` writes it (3 lines of context)."""
    before, after = _lines(old.decode("utf-8", errors="replace")), _lines(new.decode("utf-8", errors="replace"))
    body = []
    added = deleted = 0
    for line in list(difflib.unified_diff(before, after, n=3))[2:]:
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            deleted += 1
        body.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    header = (f"diff --git a/{path} b/{path}\nindex {old_sha[:7]}..{new_sha[:7]} {mode}\n"
              f"--- a/{path}\n+++ b/{path}\n")
    return added, deleted, header + "".join(body)


def _lines(text: str) -> list[str]:
    """The lines as git counts them: ended by `\\n` only (not by the form feeds and separators that
    `str.splitlines` also breaks at), each with its ending."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def remove_stale_temp_objects(common_dir: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove what a kill -9 in the middle of `store` leaves in `objects/`: gitdb's half-written temporary
    files, which git's own gc never prunes (it prunes only its own `tmp_obj_*`). Only those older than
    `older_than` seconds: a younger one may be another program's write still under way. Returns them."""
    removed = []
    cutoff = time.time() - older_than
    try:
        entries = list((common_dir / "objects").iterdir())
    except OSError:
        return []
    for path in entries:
        try:
            if GITDB_TEMP_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink() \
                    and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed
