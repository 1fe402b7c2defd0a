"""Run the check, the holdout and the proposers' commands inside bubblewrap, each seeing only what it must.

With `sandbox:` in the goal, every command goalloop starts in a worktree (the check, the holdout, the
command proposer, the Claude proposer's bash tool) runs under `bwrap` (Linux user namespaces) with:
  - its own worktree read-write, the rest of the filesystem read-only, private /tmp, /run and $HOME
    (empty, writable, thrown away), a fresh /proc and a minimal /dev;
  - hidden: the run folders (ledgers, pins, logs of earlier attempts, the metric files), every other
    worktree, the user's checkout (read-only if `sandbox.checkout: read-only`), the holdout's files
    (from all but the holdout check), the git data too when there is a holdout (its objects hold the
    holdout's files), and whatever `sandbox.hide` names;
  - no network unless `sandbox.network` says so (a new network namespace with only loopback);
  - its own pid namespace, so nothing it starts outlives it (a daemon dies with the command), and
    `--die-with-parent`, so nothing outlives goalloop either; no capabilities.
The folders on PATH and the Python goalloop runs on stay visible read-only even when they live in a hidden
place (a virtualenv in the checkout or under $HOME), so the check's tools still run.

The metric file (`check.metric_file`) is reached through a file descriptor only: goalloop opens it outside
the sandbox as descriptor 3 of the check, and $GOALLOOP_METRIC_FILE is `/proc/self/fd/3`. A process the
check starts without passing that descriptor on (Python's subprocess closes it by default) finds nothing
there. What the sandbox does not separate: code running inside the check's own process (an import, an
atexit hook, a monkeypatched scorer) can write whatever that process writes, and a child that inherits the
descriptor (a shell passes it on; close it with `3>&-`) can write it too. Code under test runs inside the
holdout check as well, where the holdout's files are visible.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from goalloop.git_runner import RepoGit
from goalloop.path_rules import PathRules
from goalloop.repo_target import RepoTarget

if TYPE_CHECKING:
    from goalloop.goal import Sandbox as SandboxSettings

Wrap = Callable[[list[str]], list[str]]
"""Turns the argv of a command (`/bin/sh -c ...`) into the argv that runs it inside the sandbox."""

METRIC_FD = 3
METRIC_FILE_INSIDE = f"/proc/self/fd/{METRIC_FD}"
WELL_KNOWN_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")
"""Sockets that hand out the host (a container daemon's); a read-only mount does not stop a connect()."""
PROBE_TIMEOUT = 20.0
NESTING_ID = 1000
"""The uid and gid inside the sandbox of a command that starts a bubblewrap of its own, when goalloop runs
as root: a root without capabilities may not map ids for a nested user namespace; an ordinary user may."""

Decision = Literal["hide", "private", "deny", "ro", "rw", "dev"]
"""What a path looks like inside: an empty read-only folder, an empty writable one thrown away afterwards,
an unreadable file, the host's path read-only, read-write, or a device bound as it is."""


# -- is bubblewrap usable here --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unavailable:
    """Why the sandbox cannot run on this machine, and what to do about it."""

    problem: str
    fix: str


def unavailable() -> Unavailable | None:
    """None when bwrap is installed and may create the namespaces the sandbox needs (probed once)."""
    return _probe(shutil.which("bwrap"), sys.platform)


@lru_cache(maxsize=4)
def _probe(bwrap: str | None, platform: str) -> Unavailable | None:
    if not platform.startswith("linux"):
        return Unavailable(
            f"needs Linux (bubblewrap); this is {platform}",
            "remove `sandbox:` from the goal on this machine, or run goalloop in a Linux VM or container",
        )
    if bwrap is None:
        return Unavailable(
            "is on, but bubblewrap (bwrap) is not installed",
            "install it: `apt-get install bubblewrap` (Debian, Ubuntu), `dnf install bubblewrap` (Fedora), "
            "`pacman -S bubblewrap` (Arch); or remove `sandbox:` from the goal",
        )
    probe = [bwrap, *_NAMESPACES, "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--", "/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Unavailable(f"bwrap could not be started: {exc}", "reinstall bubblewrap")
    if done.returncode == 0:
        return None
    said = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Unavailable(
        f"bwrap cannot create the namespaces it needs here ({said})",
        "allow unprivileged user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` (Debian, older "
        "Ubuntu), `sysctl -w user.max_user_namespaces=15000` (when it is 0), `sysctl -w "
        "kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 24.04+); in a container, start it with "
        "`--security-opt seccomp=unconfined` or run goalloop on the host",
    )


_NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--cap-drop", "ALL")


# -- what a run hides ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLayout:
    """The places of one run that no sandboxed command may see (except its own worktree inside them)."""

    checkout: Path
    """The user's own checkout of the repository."""
    run_folders: Path
    """`runs/`: every run's ledger, pins, logs and metric files."""
    worktrees: Path
    """`workspaces/`: every run's and every slot's worktree."""
    state: Path
    """A folder of this run's (hidden itself) where the sandbox keeps the unreadable stand-in file."""
    git_dir: Path | None = None
    """The repository's git data (shared by its worktrees)."""
    holdout_paths: tuple[str, ...] = ()
    """Repo-relative files and folders of the holdout: hidden from all but the holdout check."""
    home: Path = field(default_factory=Path.home)

    @classmethod
    def for_run(cls, target: RepoTarget, rules: PathRules, runs: Path, worktrees: Path, run_dir: Path) -> RunLayout:
        """The layout of a run of `target` whose records live in `runs` and worktrees in `worktrees`."""
        repo = RepoGit(target.root, run_id=None)
        listing = repo.run("ls-tree", "-r", "--name-only", "-z", target.base_commit, strip=False)
        files = [f for f in listing.split("\0") if f]
        return cls(checkout=target.root, run_folders=runs, worktrees=worktrees, state=run_dir / "sandbox",
                   git_dir=repo.common_dir, holdout_paths=hidden_tree(files, rules.is_hidden))


class Bubblewrap:
    """Builds the `bwrap` command line for each kind of command a run starts, from the goal's `sandbox:`."""

    def __init__(self, settings: SandboxSettings, layout: RunLayout, base: Path, environ: dict[str, str] | None = None,
                 bwrap: str | None = None) -> None:
        self.settings = settings
        self.layout = layout
        self.base = base
        """What relative `sandbox.ro`/`rw`/`hide` paths are relative to (the goal file's folder)."""
        self.environ = dict(os.environ if environ is None else environ)
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.denied = layout.state / "denied"
        """An empty file nobody may read, bound over each hidden file (made once: slots share it)."""
        if not self.denied.exists():
            self.denied.parent.mkdir(parents=True, exist_ok=True)
            self.denied.write_bytes(b"")
            self.denied.chmod(0)

    # -- the four kinds of command ------------------------------------------------------------------------
    def check(self, worktree: Path, metric_file: Path | None = None) -> Wrap:
        """The check: no holdout files; with `metric_file`, its only way to the metric is descriptor 3."""
        argv = self.argv(worktree, network=self.settings.network is True, holdout_visible=False)
        if metric_file is None:
            return _prefix(argv)
        argv[1:1] = ["--setenv", "GOALLOOP_METRIC_FILE", METRIC_FILE_INSIDE]
        opener = ["/bin/sh", "-c", f'exec {METRIC_FD}<>"$0" && exec "$@"', str(metric_file)]
        return _prefix(opener + argv)

    def holdout(self, worktree: Path) -> Wrap:
        """The holdout check: the only command that sees the holdout's files."""
        return _prefix(self.argv(worktree, network=self.settings.network is True, holdout_visible=True))

    def proposer(self, worktree: Path, *, readable: Sequence[Path] = (), writable: Sequence[Path] = (),
                 network: bool = False, nests: bool = False) -> Wrap:
        """A proposer's command (an agent CLI, the Claude bash tool), seeing `readable` and `writable` too
        (its prompt file, its description file). `network` is what the proposer itself needs (an agent
        CLI reaching its model API); `sandbox.network: true` or `proposer` gives it as well. `nests`: the
        command sandboxes its own commands with bubblewrap (Codex), which a root without capabilities
        cannot do, so it runs as an ordinary user inside (still the caller outside: its files stay theirs)."""
        allowed = network or self.settings.network in (True, "proposer")
        extra = {**{Path(p): "ro" for p in readable}, **{Path(p): "rw" for p in writable}}
        argv = self.argv(worktree, network=allowed, holdout_visible=False, extra=extra)
        if nests and os.geteuid() == 0:
            argv[1:1] = ["--uid", str(NESTING_ID), "--gid", str(NESTING_ID)]
        return _prefix(argv)

    # -- the command line --------------------------------------------------------------------------------
    def argv(self, worktree: Path, *, network: bool, holdout_visible: bool,
             extra: dict[Path, Decision] | None = None) -> list[str]:
        """`bwrap ... --` for a command in `worktree`; the command's own argv follows."""
        worktree = worktree.resolve()
        plan = self._plan(worktree, network, holdout_visible, extra or {})
        argv = [self.bwrap, *_NAMESPACES] + ([] if network else ["--unshare-net"])
        argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        read_only: list[str] = []
        for path, decision in _ordered(plan):
            target = str(path)
            if decision in ("hide", "private"):
                argv += ["--tmpfs", target]
                if decision == "hide":
                    read_only += ["--remount-ro", target]
            elif decision == "deny":
                argv += ["--ro-bind", str(self.denied), target]
            elif decision == "ro":
                argv += ["--ro-bind", target, target]
            elif decision == "rw":
                argv += ["--bind", target, target]
            else:
                argv += ["--dev-bind", target, target]
        return argv + read_only + ["--setenv", "TMPDIR", "/tmp", "--chdir", str(worktree), "--"]

    def _plan(self, worktree: Path, network: bool, holdout_visible: bool,
              extra: dict[Path, Decision]) -> dict[Path, Decision]:
        """Each path that differs from `/ read-only`, and how. The most specific path wins."""
        layout = self.layout
        plan: dict[Path, Decision] = {Path("/tmp"): "private", Path("/run"): "private"}
        for path in _existing([layout.home]):
            plan[path] = "private"
        hidden = [layout.checkout, layout.run_folders, layout.worktrees, *self._settings_paths("hide")]
        hidden += [Path(p) for p in WELL_KNOWN_SOCKETS]
        if self.environ.get("SSH_AUTH_SOCK"):
            hidden.append(Path(self.environ["SSH_AUTH_SOCK"]))
        for path in _existing(hidden):
            plan[path] = "hide" if path.is_dir() else "deny"
        secrets = [*_existing([layout.home]), *_existing(hidden)]
        for path in self._tools():  # never a folder that holds a hidden place (a checkout on PATH)
            if not any(path == s or path in s.parents for s in [worktree, *secrets]):
                plan.setdefault(path, "ro")
        if layout.git_dir is not None:
            plan[layout.git_dir.resolve()] = "hide" if layout.holdout_paths else "ro"
        if self.settings.checkout == "read-only":
            plan[layout.checkout.resolve()] = "ro"
        if network:
            resolv = Path("/etc/resolv.conf").resolve()
            if resolv.exists():
                plan.setdefault(resolv, "ro")
        for kind in ("ro", "rw"):
            for path in self._settings_paths(kind):
                plan[path] = "dev" if _is_device(path) else kind  # type: ignore[assignment]
        for secret in (layout.run_folders, layout.worktrees):  # never shown, whatever a broader rule says
            if secret.exists():
                plan[secret.resolve()] = "hide"
        plan[worktree] = "rw"
        plan.update({path.resolve(): decision for path, decision in extra.items()})
        if not holdout_visible:
            for rel in layout.holdout_paths:
                path = worktree / rel
                if path.exists():
                    plan[path] = "hide" if path.is_dir() else "deny"
        return _without_redundant(plan)

    def _settings_paths(self, key: str) -> list[Path]:
        """`sandbox.ro`, `rw` or `hide`: `~` expanded, relative to the goal's folder, globs expanded."""
        found: list[Path] = []
        for raw in getattr(self.settings, key):
            pattern = os.path.expanduser(raw)
            pattern = pattern if os.path.isabs(pattern) else str(self.base / pattern)
            matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
            found += [Path(m).resolve() for m in matches if os.path.lexists(m)]
        return found

    def _tools(self) -> list[Path]:
        """The folders on PATH and what their programs need beside them, and the Python goalloop runs on:
        a virtualenv whole; a version manager's root for its `shims` (pyenv, rbenv, asdf); `lib` beside
        `bin` (~/.local, conda). Never the `share` or config folders beside them."""
        found: list[Path] = []
        for entry in self.environ.get("PATH", "").split(os.pathsep):
            if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
                continue
            folder = Path(entry).resolve()
            if (folder.parent / "pyvenv.cfg").exists() or folder.name == "shims":
                found.append(folder.parent)
                continue
            found.append(folder)
            if folder.name == "bin" and (folder.parent / "lib").is_dir():
                found.append(folder.parent / "lib")
        found += [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
        return found


@dataclass(frozen=True)
class ProposerSandbox:
    """The sandbox of one slot, as a proposer sees it: asked for the wrap of each command it runs."""

    bubblewrap: Bubblewrap
    worktree: Path

    def wrap(self, *, readable: Sequence[Path] = (), writable: Sequence[Path] = (), network: bool = False,
             nests: bool = False) -> Wrap:
        return self.bubblewrap.proposer(self.worktree, readable=readable, writable=writable, network=network,
                                        nests=nests)


def hidden_tree(files: Sequence[str], is_hidden: Callable[[str], bool]) -> tuple[str, ...]:
    """The hidden ones of `files` (repo-relative), a folder standing for its files when all of them are."""
    total: dict[str, int] = {}
    hidden: dict[str, int] = {}
    chosen = {f for f in files if is_hidden(f)}
    for rel in files:
        for folder in _folders(rel):
            total[folder] = total.get(folder, 0) + 1
            hidden[folder] = hidden.get(folder, 0) + (rel in chosen)
    whole = {folder for folder, count in hidden.items() if count == total[folder]}
    found: set[str] = set()
    for rel in chosen:
        tops = [folder for folder in reversed(_folders(rel)) if folder in whole]
        found.add(tops[0] if tops else rel)
    return tuple(sorted(found))


def _folders(rel: str) -> list[str]:
    """`a/b/c.txt` -> [`a/b`, `a`]: the folders holding a repo-relative file, innermost first."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _prefix(argv: list[str]) -> Wrap:
    return lambda command: [*argv, *command]


def _existing(paths: Iterable[Path]) -> list[Path]:
    return [Path(p).resolve() for p in paths if os.path.lexists(p)]


def _is_device(path: Path) -> bool:
    return path == Path("/dev") or Path("/dev") in path.parents


def _ordered(plan: dict[Path, Decision]) -> list[tuple[Path, Decision]]:
    """Shallow paths first, so a deeper rule is mounted on top of the one it refines."""
    return sorted(plan.items(), key=lambda item: (len(item[0].parts), str(item[0])))


def _without_redundant(plan: dict[Path, Decision]) -> dict[Path, Decision]:
    """Drop a hiding rule inside a place already hidden by a shallower one, and a `/` read-only rule
    inside a place already read-only; what is left is what bwrap must mount."""
    kept: dict[Path, Decision] = {}
    for path, decision in _ordered(plan):
        parent = next((kept[p] for p in path.parents if p in kept), "ro")
        hidden_in_hidden = decision in ("hide", "private", "deny") and parent in ("hide", "private")
        if hidden_in_hidden or (decision == "ro" and parent == "ro"):
            continue
        kept[path] = decision
    return kept
