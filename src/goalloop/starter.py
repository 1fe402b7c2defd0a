"""Starter goal files written by `goalloop init`, from the repository's real layout.

`read_layout` looks at the files git tracks (and the virtual environment beside them) to find:
where the tests are (`tests/`, `test/`, `pkg/tests/`, `src/pkg/tests/`, pytest's `testpaths`, `*_test.go`,
`*.test.js`), the configuration that decides which tests run (pytest.ini, tox.ini, setup.cfg,
pyproject.toml, conftest.py, jest/vitest configs), the sources, and how the project runs its tests (uv,
poetry, a plain venv, npm, cargo, go). The goal it writes protects the tests and their configuration,
makes the sources editable, and has a check that imports the worktree's code: a src layout gets
`PYTHONPATH=src`, because an editable install points at the user's checkout, not at the worktree.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from goalloop.git_runner import git_environment

SCHEMA_COMMENT = "# yaml-language-server: $schema=./goal.schema.json\n"

OTHER_AGENTS = """\
# Other agents: kind: codex (reads CODEX_API_KEY or OPENAI_API_KEY), kind: aider (program: its venv's aider),
# kind: claude (the Messages API, no CLI), or kind: command with run: my-agent < "$GOALLOOP_PROMPT_FILE".
"""

PROPOSER_BLOCKS = {
    "claude-code": """\
proposer:
  kind: claude-code               # the Claude Code CLI: `claude` on PATH; its key (ANTHROPIC_API_KEY) reaches it alone
  # model: claude-sonnet-4-5      # default: Claude Code's own
  # allow: ["Bash(ruff check:*)"] # tools beyond editing files and running the check
  timeout: 30m
""" + OTHER_AGENTS,
    "codex": """\
proposer:
  kind: codex                     # the Codex CLI: `codex` on PATH; reads CODEX_API_KEY or OPENAI_API_KEY
  # model: gpt-5-codex            # default: Codex's own
  timeout: 30m
""",
    "aider": """\
proposer:
  kind: aider                     # Aider: `aider` on PATH (or program: ~/.aider-venv/bin/aider)
  # model: sonnet                 # default: Aider's own, from the key it finds
  timeout: 30m
""",
    "claude": """\
proposer:
  kind: claude                    # Claude through the API; needs ANTHROPIC_API_KEY
  # model: claude-sonnet-5-5      # default: a current Sonnet
  # max_turns: 30                 # model turns per attempt
""",
    "command": """\
proposer:
  kind: command                   # any other agent CLI that edits files in place (Claude Code, Codex and
                                  # Aider are kind: claude-code, codex and aider)
  run: my-agent < "$GOALLOOP_PROMPT_FILE"   # CHANGE_ME: your agent; it may write its spend to $GOALLOOP_COST_FILE
  timeout: 30m
# env:
#   pass: [MY_AGENT_API_KEY]      # secrets are hidden from checks and commands unless passed here
""",
    "search": """\
proposer:
  kind: search                    # numeric search with Optuna; no model, no key
  params:
    # Each knob: a file, a regex whose group 1 is the value, and a range or a list of choices.
    learning_rate: {file: CHANGE_ME.py, pattern: 'LR = ([0-9.e-]+)', low: 1.0e-4, high: 1.0e-1, log: true}
""",
}

USD_REPORTED = ("claude-code", "aider", "claude")
"""The starters whose proposer reports dollars, so a usd budget is written for them."""

TEST_DIR_NAMES = ("tests", "test", "testing", "__tests__")
PYTHON_TEST_FILE = re.compile(r"(^test_.*|.*_test)\.py$")
JS_TEST_FILE = re.compile(r".*\.(test|spec)\.[cm]?[jt]sx?$")
JS_CONFIGS = re.compile(r"^(jest|vitest|vite)\.config\.[cm]?[jt]s$")
VENV_DIRS = (".venv", "venv", "env", ".env")


@dataclass
class Layout:
    """What `init` found in a repository, and the goal keys it derives from it."""

    check: str
    metric: str | None = None
    protected: list[str] = field(default_factory=list)
    editable: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """One line each, written as comments at the top of the goal: what was found and why the check reads so."""


def read_layout(root: Path) -> Layout:
    """The layout of the repository at `root` (see the module docstring)."""
    files = _tracked_files(root)
    names = {PurePosixPath(f).name for f in files}
    if any(f.endswith(".py") for f in files) and (names & {"pyproject.toml", "setup.py", "setup.cfg", "tox.ini",
                                                           "pytest.ini"} or _python_tests(files)):
        layout = _python_layout(root, files)
    elif "package.json" in files:
        layout = _node_layout(root, files)
    elif "Cargo.toml" in files:
        layout = Layout("cargo test", protected=_existing(files, ["tests/**", "benches/**"]),
                        editable=_existing(files, ["src/**"]), notes=["a Rust crate: cargo test"])
    elif "go.mod" in files:
        layout = Layout("go test -v ./...", protected=_existing(files, ["**/*_test.go", "**/testdata/**"]),
                        notes=["a Go module: go test -v (verbose, so the count of tests run can be guarded)"])
    elif "Makefile" in files and re.search(r"^test:", (root / "Makefile").read_text(errors="replace"), re.M):
        layout = Layout("make test", protected=_existing(files, [f"{d}/**" for d in TEST_DIR_NAMES]))
    else:
        layout = Layout("./check.sh", r"^score:\s*(\S+)", notes=["no test suite found: write check.sh to print "
                                                                 "`score: <number>`"])
    layout.context = [f for f in ("README.md", "README.rst", "README") if f in files][:1]
    return layout


def is_test_file(path: str) -> bool:
    """Whether a repo path is a test (or test configuration) rather than code under test."""
    pure = PurePosixPath(path)
    return (any(part in TEST_DIR_NAMES for part in pure.parts[:-1]) or pure.name == "conftest.py"
            or bool(PYTHON_TEST_FILE.match(pure.name) or JS_TEST_FILE.match(pure.name))
            or pure.name.endswith("_test.go"))


def _tracked_files(root: Path) -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60,
                                 env=git_environment(os.environ))
    except (OSError, subprocess.SubprocessError):
        return []
    return [f for f in listing.stdout.decode("utf-8", errors="replace").split("\0") if f]


def _existing(files: list[str], globs: list[str]) -> list[str]:
    """The globs that match at least one tracked file (a glob matching nothing protects nothing)."""
    import pathspec

    return [g for g in globs if any(pathspec.PathSpec.from_lines("gitignore", [g]).match_file(f) for f in files)]


def _python_tests(files: list[str]) -> list[str]:
    return [f for f in files if PYTHON_TEST_FILE.match(PurePosixPath(f).name)]


def _test_roots(test_files: list[str]) -> list[str]:
    """The folders holding the tests: the outermost folder named like tests/, else each file's own folder."""
    roots: set[str] = set()
    for path in test_files:
        parts = PurePosixPath(path).parts[:-1]
        named = next((i for i, part in enumerate(parts) if part in TEST_DIR_NAMES), None)
        if named is not None:
            roots.add("/".join(parts[: named + 1]))
        elif parts:
            roots.add("/".join(parts))
        else:
            roots.add(path)
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def _python_layout(root: Path, files: list[str]) -> Layout:
    config = _pytest_config(root, files)
    testpaths = [p.strip("/") for p in config.get("testpaths", [])]
    tests = _test_roots(_python_tests(files))
    roots = sorted(set(tests) | {p for p in testpaths if any(f.startswith(p + "/") or f == p for f in files)})
    protected = [r if r.endswith(".py") else f"{r}/**" for r in roots]
    protected += [f for f in ("pytest.ini", "tox.ini", "noxfile.py") if f in files]
    protected += [f for f in config.get("files", []) if f not in protected]
    if any(PurePosixPath(f).name == "conftest.py" for f in files):
        protected.append("**/conftest.py")
    src_layout = any(re.match(r"^src/[^/]+/__init__\.py$", f) for f in files)
    packages = sorted({f.split("/")[0] for f in files if re.match(r"^[A-Za-z_]\w*/__init__\.py$", f)}
                      - set(TEST_DIR_NAMES))
    editable = ["src/**"] if src_layout else [f"{p}/**" for p in packages]
    notes = [f"tests found in {', '.join(roots) or 'no folder'}" + (" (pytest testpaths)" if testpaths else "")]
    runner = "-m pytest -q" if config or not _unittest_only(root, files) else "-m unittest discover -s " + (
        tests[0] if tests and not tests[0].endswith(".py") else ".") + " -t ."
    prefix = "PYTHONPATH=src " if src_layout else ""
    if src_layout:
        notes.append("a src layout: PYTHONPATH=src makes the check import the worktree's code, not an installed "
                     "copy")
    if "uv.lock" in files:
        check = f"{prefix}uv run --quiet python {runner}"
        notes.append("a uv project: `uv run` sets up the worktree's own environment on the first check")
    elif "poetry.lock" in files:
        check = f"poetry install --quiet --no-interaction && {prefix}poetry run python {runner}"
        notes.append("a poetry project: each worktree gets its own poetry environment, installed by the check")
    else:
        venv = next((root / d for d in VENV_DIRS if (root / d / "bin" / "python").exists()), None)
        python = str(venv / "bin" / "python") if venv else "python3"
        check = f"{prefix}{python} {runner}"
        notes.append(f"the virtual environment {venv} (by absolute path: it is not in the worktree)" if venv
                     else "no virtual environment found: the check uses python3 from PATH")
    return Layout(check, protected=protected, editable=editable, notes=notes)


def _pytest_config(root: Path, files: list[str]) -> dict[str, list[str]]:
    """pytest's settings wherever they live: {'testpaths': [...], 'files': [the files holding them]}."""
    found: dict[str, list[str]] = {}
    for name, section in (("pytest.ini", "pytest"), ("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        if name not in files:
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(root / name, encoding="utf-8")
        except configparser.Error:
            continue
        if parser.has_section(section):
            found.setdefault("files", []).append(name)
            found.setdefault("testpaths", []).extend(parser.get(section, "testpaths", fallback="").split())
    if "pyproject.toml" in files:
        try:
            data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        options = data.get("tool", {}).get("pytest", {}).get("ini_options")
        if isinstance(options, dict):
            found.setdefault("files", []).append("pyproject.toml")
            paths = options.get("testpaths", [])
            found.setdefault("testpaths", []).extend(paths if isinstance(paths, list) else str(paths).split())
    return found


def _unittest_only(root: Path, files: list[str]) -> bool:
    """Whether the tests are unittest.TestCase classes and nothing in the project mentions pytest."""
    for name in ("pyproject.toml", "setup.cfg", "setup.py", "requirements-dev.txt", "requirements.txt", "tox.ini"):
        if name in files and "pytest" in (root / name).read_text(encoding="utf-8", errors="replace"):
            return False
    texts = [(root / f).read_text(encoding="utf-8", errors="replace") for f in _python_tests(files)[:50]]
    return bool(texts) and all("unittest" in t and "pytest" not in t for t in texts)


def _node_layout(root: Path, files: list[str]) -> Layout:
    tests = [f for f in files if JS_TEST_FILE.match(PurePosixPath(f).name)]
    roots = _test_roots(tests)
    protected = [r if JS_TEST_FILE.match(PurePosixPath(r).name) else f"{r}/**" for r in roots]
    protected += [f for f in files if JS_CONFIGS.match(f)]
    manager = "pnpm" if "pnpm-lock.yaml" in files else "yarn" if "yarn.lock" in files else "npm"
    install = {"npm": "npm ci --silent" if "package-lock.json" in files else "npm install --silent",
               "yarn": "yarn install --silent --frozen-lockfile", "pnpm": "pnpm install --silent --frozen-lockfile"}
    return Layout(f"{install[manager]} && {manager} test", protected=protected,
                  editable=_existing(files, ["src/**", "lib/**"]),
                  notes=[f"a {manager} project: the worktree installs its own node_modules, then runs the tests"])


def guess_check(repo_root: Path) -> tuple[str, str | None]:
    """(check command, metric regex or None) for what the repository looks like."""
    layout = read_layout(repo_root)
    return layout.check, layout.metric


def starter_goal(kind: str, repo_root: Path, goal_path: Path) -> str:
    """A commented goal file for `kind` working on `repo_root`, to be written at `goal_path`."""
    layout = read_layout(repo_root)
    try:
        repo_rel = Path(os.path.relpath(repo_root.resolve(), goal_path.parent.resolve()))
    except ValueError:
        repo_rel = repo_root
    metric_lines = (
        f"  metric: '{layout.metric}'          # the number is group 1 of the last matching stdout line\n"
        if layout.metric
        else "  # metric: '^score:\\s*(\\S+)'  # add a regex to optimise a number instead of pass/fail\n"
    )
    target = (
        "target:\n  direction: maximize\n  # value: 0.95                  # stop as soon as the metric reaches this\n"
        if layout.metric
        else "# target: the check passes (exit code 0) without running fewer tests than the baseline\n"
    )
    return (
        SCHEMA_COMMENT
        + "# A goalloop goal file. Every key is described in GOAL_TEMPLATE.md.\n"
        + "".join(f"# init found: {note}\n" for note in layout.notes)
        + "# Before a night is spent on it: `goalloop doctor` proves the check tests the worktree.\n"
        + f"repo: {repo_rel.as_posix()}                        # the git repository to work on\n"
        + "base: HEAD\n"
        + "instructions: |\n  Describe the task here: what to improve, what to leave alone, what you have tried.\n"
        + _list_line("context", layout.context, "files always shown to the proposer", ["README.md"])
        + _list_line("editable", layout.editable, "only these may change (default: all but protected)", ["src/**"])
        + _list_line("protected", layout.protected, "never changed; a change here is rejected", ["tests/**"])
        + "check:\n"
        + f"  run: {layout.check}\n"
        + "  timeout: 10m\n"
        + metric_lines
        + target
        + "budget:\n  iterations: 20\n  time: 8h\n"
        + ("  usd: 5.00\n" if kind in USD_REPORTED else "")
        + PROPOSER_BLOCKS[kind]
    )


def _list_line(key: str, values: list[str], comment: str, example: list[str]) -> str:
    import json

    if values:
        return f"{key}: {json.dumps(values)}          # {comment}\n"
    return f"# {key}: {json.dumps(example)}          # {comment}\n"
