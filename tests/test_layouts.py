"""init, validate and doctor on repositories laid out like real ones, with the checks they really run.

- like toolz: the package at the root, its tests in toolz/tests/;
- like python-tabulate: the tests in test/, a tox.ini;
- a src layout installed editable (`pip install -e`) into a venv in the user's checkout: the check that
  runs that venv's pytest imports the checkout, not the worktree, and doctor says so with the fix.
Each venv borrows this interpreter's site-packages (a .pth file) for pytest, so nothing is downloaded
except setuptools for the editable install (skipped with the reason when pip cannot fetch it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from agent_clis import WHERE
from conftest import git, make_repo, results_rows, run_cli, write_goal

PURELIB = sysconfig.get_paths()["purelib"]


def make_venv(repo: Path) -> Path:
    """repo/.venv (untracked, as users have it) that can import pytest; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo / ".venv")], check=True, timeout=120)
    python = repo / ".venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrow_pytest.pth").write_text(PURELIB + "\n", encoding="utf-8")
    return python


def init_goal(repo: Path) -> tuple[Path, dict]:
    """The goal `goalloop init` writes with its default proposer (Claude Code)."""
    result = run_cli("init", cwd=repo)
    assert result.exit_code == 0, result.output
    path = repo / "goals" / f"{repo.name}.yaml"
    return path, yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def claude_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH with a `claude` and a key, so that validate checks the layout and finds nothing else to say: the
    real CLI where `.ci/run` installed it, else a stand-in (validate looks it up; these tests run no proposer)."""
    found = shutil.which("claude") or (str(WHERE["claude"]) if WHERE["claude"].exists() else None)
    if found is None:
        folder = tmp_path_factory.mktemp("bin")
        (folder / "claude").write_text("#!/bin/sh\nexit 1\n")
        (folder / "claude").chmod(0o755)
        found = str(folder / "claude")
    return {"PATH": f"{Path(found).parent}{os.pathsep}{os.environ['PATH']}", "ANTHROPIC_API_KEY": "sk-ant-test"}


def _warnings(validate_output: str) -> list[str]:
    return [line for line in validate_output.splitlines() if line.strip().startswith("warning")]


def scripted_run(tmp_path: Path, goal: dict, steps: list[dict], name: str = "g") -> tuple[int, list[dict], str]:
    goal = {**goal, "proposer": {"kind": "scripted", "steps": steps}, "budget": {"iterations": len(steps)}}
    goal.pop("env", None)
    path = write_goal(tmp_path / f"{name}.yaml", goal)
    home = tmp_path / f"home-{name}"
    result = run_cli("run", str(path), "--home", str(home), cwd=tmp_path)
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    return result.exit_code, results_rows(run_dir), result.output


# -- like toolz -------------------------------------------------------------------------------------------
TOOLZ = {
    ".gitignore": ".venv/\ngoals/\n",
    "pyproject.toml": '[project]\nname = "toolz"\nversion = "1.0"\n[project.optional-dependencies]\ntest = ["pytest"]\n',
    "toolz/__init__.py": "from .itertoolz import first, second\n",
    "toolz/itertoolz.py": "def first(seq):\n    return next(iter(seq)) + 1\n\n\ndef second(seq):\n    return list(seq)[1]\n",
    "toolz/tests/test_itertoolz.py": "from toolz import first, second\n\n\ndef test_first():\n    assert first([1, 2]) == 1\n",
    "toolz/tests/test_second.py": "from toolz import second\n\n\ndef test_second():\n    assert second([1, 2]) == 2\n",
}


@pytest.fixture(scope="module")
def toolz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("toolz") / "toolz", TOOLZ)
    make_venv(repo)
    return repo


def test_init_protects_toolz_tests_where_they_are(toolz: Path, claude_env: dict[str, str]) -> None:
    path, goal = init_goal(toolz)
    assert goal["protected"] == ["toolz/tests/**"]
    assert goal["editable"] == ["toolz/**"]
    assert goal["check"]["run"] == f"{toolz / '.venv' / 'bin' / 'python'} -m pytest -q"
    result = run_cli("validate", str(path), cwd=toolz, env=claude_env)
    assert result.exit_code == 0 and _warnings(result.stdout) == [], result.output
    assert "goalloop doctor" in result.stdout


def rename(failing: str, to: str, files: dict[str, str]) -> dict:
    """A scripted step that moves the failing test to a file name pytest does not collect."""
    return {"description": "move the failing test where pytest does not look", "files": {failing: None, to: files[failing]}}


def assert_renaming_is_rejected(tmp_path: Path, repo: Path, step: dict, unprotected: list[str]) -> None:
    """With init's goal the rename touches a protected path. With `unprotected` (a glob that misses the tests,
    as the old init wrote) and every path editable, the rename reaches the check, and passes it, but ran 1
    test where the baseline ran 2: rejected with both counts. With the count guard off too, the attack
    succeeds: exit 0, target met."""
    path = repo / "goals" / f"{repo.name}.yaml"
    goal = {**(yaml.safe_load(path.read_text()) if path.exists() else init_goal(repo)[1]), "repo": str(repo)}
    code, rows, out = scripted_run(tmp_path, goal, [step], "init")
    assert (code, rows[1]["verdict"]) == (1, "rejected"), out
    failing = next(name for name, text in step["files"].items() if text is None)
    assert f"{failing} (protected)" in out

    old = {**goal, "protected": unprotected, "editable": []}
    code, rows, out = scripted_run(tmp_path, old, [step], "old")
    assert (code, rows[1]["verdict"]) == (1, "rejected"), out
    assert "ran 1 tests, the kept state ran 2 (guard: tests run)" in out

    unguarded = {**old, "keep": {"guard_tests": False}}
    code, rows, out = scripted_run(tmp_path, unguarded, [step], "off")
    assert (code, rows[1]["verdict"]) == (0, "keep"), out


def test_renaming_the_failing_test_is_rejected_by_inits_globs_and_by_the_count_guard(toolz: Path, tmp_path: Path) -> None:
    step = rename("toolz/tests/test_itertoolz.py", "toolz/tests/itertoolz_checks.py", TOOLZ)
    assert_renaming_is_rejected(tmp_path, toolz, step, ["tests/**"])


def test_the_failing_baseline_says_which_test_fails(toolz: Path, tmp_path: Path) -> None:
    goal = {"repo": str(toolz), "check": {"run": f"{toolz / '.venv/bin/python'} -m pytest -q --color=yes"}}
    code, rows, out = scripted_run(tmp_path, goal, [{"description": "nothing", "fail": "no idea"}], "reason")
    home = tmp_path / "home-reason"
    status = run_cli("status", "--home", str(home), cwd=tmp_path)
    assert "FAILED toolz/tests/test_itertoolz.py::test_first - assert 2 == 1" in status.stdout, status.output
    assert "\x1b[" not in status.stdout


# -- like python-tabulate ---------------------------------------------------------------------------------
TABULATE = {
    ".gitignore": ".venv/\ngoals/\n",
    "pyproject.toml": '[project]\nname = "tabulate"\nversion = "0.9"\n',
    "tox.ini": "[tox]\nenvlist = py311\n[testenv]\ncommands = pytest -v {posargs}\ndeps = pytest\n[pytest]\n"
               "addopts = -p no:cacheprovider\n",
    "tabulate/__init__.py": "def tabulate(rows):\n    return '\\n'.join(' '.join(map(str, r)) for r in rows)\n",
    "test/common.py": "import pytest  # noqa\n",
    "test/test_output.py": "from tabulate import tabulate\n\n\ndef test_plain():\n    assert tabulate([[1, 2]]) == '1 2'\n",
}


def test_init_protects_tabulates_test_folder_and_its_pytest_config(tmp_path: Path, claude_env: dict[str, str]) -> None:
    repo = make_repo(tmp_path / "python-tabulate", TABULATE)
    make_venv(repo)
    path, goal = init_goal(repo)
    assert goal["protected"] == ["test/**", "tox.ini"]
    assert goal["editable"] == ["tabulate/**"]
    result = run_cli("validate", str(path), cwd=repo, env=claude_env)
    assert result.exit_code == 0 and _warnings(result.stdout) == [], result.output
    doctor = run_cli("doctor", str(path), cwd=repo)
    assert doctor.exit_code == 0, doctor.output
    assert "1 tests ran (pytest)" in doctor.stdout and "it tests the worktree" in doctor.stdout


def test_renaming_tabulates_failing_test_is_rejected_by_inits_globs_and_by_the_count_guard(tmp_path: Path) -> None:
    """In test/ (where the old init's tests/** matched nothing), with tox.ini's pytest section."""
    failing = "test/test_align.py"
    files = {**TABULATE, failing: "from tabulate import tabulate\n\n\ndef test_two_rows():\n"
                                   "    assert tabulate([[1], [2]]) == '1\\n2\\n'\n"}
    repo = make_repo(tmp_path / "python-tabulate", files)
    make_venv(repo)
    assert_renaming_is_rejected(tmp_path, repo, rename(failing, "test/align_checks.py", files), ["tests/**"])


def test_validate_warns_about_a_protected_glob_that_matches_nothing_and_names_the_real_tests(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "python-tabulate", TABULATE)
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "protected": ["tests/**"], "context": ["NOTES.md"],
        "check": {"run": "no-such-runner -q", "metric": r"^score: (\S+)"},
        "proposer": {"kind": "command", "run": "no-such-agent --go"},
    })
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "protected: 'tests/**' matches no file" in out and "test/**, tox.ini" in out, out
    assert "context: 'NOTES.md' matches no file" in out
    assert "check.run: `no-such-runner` is not on PATH" in out
    assert "proposer.run: `no-such-agent` is not on PATH" in out
    assert "every gain is a single measurement" in out


# -- a src layout installed editable into the user's venv -------------------------------------------------
SRC = {
    ".gitignore": ".venv/\ngoals/\n*.egg-info/\n",
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
                      '[project]\nname = "mypkg"\nversion = "0.1"\n[tool.pytest.ini_options]\n'
                      'addopts = "-p no:cacheprovider"\n',
    "src/mypkg/__init__.py": "def add(a, b):\n    return a - b\n",
    "tests/test_add.py": "from mypkg import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "tests/test_import.py": "import mypkg\n\n\ndef test_import():\n    assert mypkg.add\n",
}
FIX = {"description": "add, not subtract", "files": {"src/mypkg/__init__.py": "def add(a, b):\n    return a + b\n"}}


@pytest.fixture(scope="module")
def src_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("srclayout") / "mypkg", SRC)
    python = make_venv(repo)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "-e", str(repo)], capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"pip install -e could not set up the editable install: {install.stderr.strip()[-300:]}")
    where = subprocess.run([str(python), "-c", "import mypkg; print(mypkg.__file__)"], cwd="/",
                           capture_output=True, text=True).stdout.strip()
    assert where == str(repo / "src" / "mypkg" / "__init__.py"), "the editable install points at the checkout"
    return repo


def test_doctor_finds_the_check_that_imports_the_users_checkout_and_gives_the_fix(src_layout: Path, tmp_path: Path) -> None:
    naive = write_goal(tmp_path / "naive.yaml", {
        "repo": str(src_layout), "check": {"run": f"{src_layout / '.venv/bin/python'} -m pytest -q"},
        "proposer": {"kind": "scripted", "steps": [FIX]},
    })
    result = run_cli("doctor", str(naive), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "the check did not notice that 1 source file(s) were broken on purpose (src/mypkg/__init__.py)" in out
    assert f"`import mypkg` loads {src_layout / 'src/mypkg/__init__.py'} in your checkout (an editable install)" in out
    assert "fix: make the check import the worktree: run it with PYTHONPATH=src" in out
    assert git(src_layout, "status", "--porcelain") == "", "the user's checkout is untouched"
    assert "goalloop-doctor" not in git(src_layout, "worktree", "list")

    code, rows, out = scripted_run(tmp_path, yaml.safe_load(naive.read_text()), [FIX], "naive")
    assert (code, rows[1]["verdict"]) == (1, "discard"), "the symptom: the real fix is discarded"


def test_inits_check_for_a_src_layout_tests_the_worktree(src_layout: Path, tmp_path: Path) -> None:
    path, goal = init_goal(src_layout)
    assert goal["check"]["run"].startswith("PYTHONPATH=src ")
    assert goal["protected"] == ["tests/**", "pyproject.toml"] and goal["editable"] == ["src/**"]
    result = run_cli("doctor", str(path), cwd=src_layout)
    assert result.exit_code == 0, result.output
    assert "it tests the worktree" in result.stdout
    code, rows, out = scripted_run(tmp_path, {**goal, "repo": str(src_layout)}, [FIX], "init")
    assert (code, rows[1]["verdict"]) == (0, "keep"), out


def test_renaming_the_src_layouts_failing_test_is_rejected_by_inits_globs_and_by_the_count_guard(
        src_layout: Path, tmp_path: Path) -> None:
    """The src layout installed editable, with init's PYTHONPATH=src check; unprotected, the count guard holds."""
    assert_renaming_is_rejected(tmp_path, src_layout, rename("tests/test_add.py", "tests/add_checks.py", SRC), [])


def test_validate_warns_about_a_venv_path_that_is_only_in_the_checkout(src_layout: Path, tmp_path: Path) -> None:
    goal = write_goal(tmp_path / "g.yaml", {"repo": str(src_layout), "check": {"run": ".venv/bin/python -m pytest"},
                                            "proposer": {"kind": "scripted", "steps": [FIX]}})
    result = run_cli("validate", str(goal), cwd=tmp_path)
    assert "check.run: .venv/bin/python exists in your checkout but git does not track it" in result.stdout, result.output


# -- a run that cannot start leaves nothing behind ----------------------------------------------------------
def _leftovers(repo: Path, home: Path) -> list[str]:
    branches = git(repo, "branch", "--list", "goalloop/*")
    refs = git(repo, "for-each-ref", "refs/goalloop/")
    worktrees = [line for line in git(repo, "worktree", "list").splitlines()[1:]]
    runs = [p.name for p in (home / "runs").glob("*") if (p / "run.json").exists()] if (home / "runs").exists() else []
    return [x for x in (branches, refs, *worktrees, *runs) if x]


def test_a_check_without_its_test_runner_exits_2_leaves_nothing_and_the_fixed_goal_runs(tmp_path: Path) -> None:
    """The venv has no pytest: `No module named pytest` is not a failing baseline to spend a budget on but a
    goal that cannot run: exit 2, with the fix, and no branch, ref, worktree or run folder left."""
    repo = make_repo(tmp_path / "toolz", TOOLZ)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    goal = {"repo": str(repo), "check": {"run": f"{tmp_path / 'bare/bin/python'} -m pytest -q"}}
    home = tmp_path / "home"
    path = write_goal(tmp_path / "g.yaml", {**goal, "proposer": {"kind": "scripted", "steps": [FIX]}})
    result = run_cli("run", str(path), "--home", str(home), cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "the check ran no test" in result.stderr and "No module named pytest" in result.stderr
    assert "install the test runner" in result.stderr
    assert _leftovers(repo, home) == []

    missing = write_goal(tmp_path / "m.yaml", {**goal, "check": {"run": "no-such-command-here"},
                                                "proposer": {"kind": "scripted", "steps": [FIX]}})
    assert run_cli("run", str(missing), "--home", str(home), cwd=tmp_path).exit_code == 2
    assert _leftovers(repo, home) == []

    fixed = write_goal(tmp_path / "g.yaml", {**goal, "check": {"run": f"{sys.executable} -m pytest -q"},
                                              "proposer": {"kind": "scripted", "steps": [FIX]}})
    assert run_cli("run", str(fixed), "--home", str(home), cwd=tmp_path).exit_code == 1


def test_clean_removes_a_run_whose_process_died_before_its_baseline(tmp_path: Path) -> None:
    """The check kills goalloop itself (kill -9 of its shell's parent) during the baseline: the run is left as
    "stopped (killed?)" with nothing recorded. `clean` removes it whole; a run that recorded a baseline stays."""
    repo = make_repo(tmp_path / "proj", {"check.sh": "#!/bin/sh\nkill -9 $(cut -d' ' -f4 /proc/$PPID/stat)\n", "ok.sh": "#!/bin/sh\nexit 0\n"})
    home = tmp_path / "home"
    dead = write_goal(tmp_path / "dead.yaml", {"repo": str(repo), "check": {"run": "sh check.sh"},
                                               "proposer": {"kind": "scripted", "steps": [FIX]}})
    assert run_cli("run", str(dead), "--home", str(home), cwd=tmp_path).exit_code == -9
    live = write_goal(tmp_path / "live.yaml", {"repo": str(repo), "check": {"run": "sh ok.sh"},
                                               "proposer": {"kind": "scripted", "steps": [FIX]}})
    assert run_cli("run", str(live), "--home", str(home), cwd=tmp_path).exit_code == 0
    assert "stopped (killed?)" in run_cli("runs", "--home", str(home), cwd=tmp_path).stdout
    dry = run_cli("clean", "--dry-run", "--home", str(home), cwd=tmp_path)
    assert "would remove dead-" in dry.stdout and "never recorded a baseline" in dry.stdout, dry.output
    assert run_cli("clean", "--home", str(home), cwd=tmp_path).exit_code == 0
    assert not git(repo, "branch", "--list", "goalloop/dead-*")
    assert git(repo, "branch", "--list", "goalloop/live-*")
    assert [p.name.split("-")[0] for p in (home / "runs").glob("*") if (p / "run.json").exists()] == ["live"]


# -- init for other package managers, doctor on a noisy metric ---------------------------------------------
@pytest.mark.parametrize("lock, expected", [
    ("uv.lock", "PYTHONPATH=src uv run --quiet python -m pytest -q"),
    ("poetry.lock", "poetry install --quiet --no-interaction && PYTHONPATH=src poetry run python -m pytest -q"),
])
def test_init_writes_the_check_for_uv_and_poetry_projects(tmp_path: Path, lock: str, expected: str) -> None:
    repo = make_repo(tmp_path / "proj", {**SRC, lock: "# lock\n"})
    _, goal = init_goal(repo)
    assert goal["check"]["run"] == expected


def test_init_reads_pytest_testpaths(tmp_path: Path) -> None:
    files = {**TABULATE, "tox.ini": "[pytest]\ntestpaths = checks\n", "checks/run_all.py": "def test_x(): pass\n",
             "test/test_output.py": TABULATE["test/test_output.py"]}
    repo = make_repo(tmp_path / "proj", files)
    _, goal = init_goal(repo)
    assert goal["protected"][:2] == ["checks/**", "test/**"] and "tox.ini" in goal["protected"]


NOISY_METRIC = "import random\nprint(f'score: {random.gauss(10, 1):.4f}')\n"


def test_doctor_measures_the_noise_and_says_when_gains_would_be_single_measurements(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"score.py": NOISY_METRIC, "model.py": "X = 1\n"})
    base = {"repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score:\s*(\S+)"},
            "proposer": {"kind": "scripted", "steps": [FIX]}}
    single = run_cli("doctor", str(write_goal(tmp_path / "one.yaml", base)), cwd=tmp_path)
    assert single.exit_code == 1, single.output
    assert "the metric changed between two runs of the same code" in single.stdout
    assert "fix: set keep.repeats: 3" in single.stdout
    repeated = run_cli("doctor", str(write_goal(tmp_path / "three.yaml", {**base, "keep": {"repeats": 3}})),
                       cwd=tmp_path)
    assert "noise: 3 runs of base gave" in repeated.stdout and "keep.confidence 0.95" in repeated.stdout


def test_init_runs_a_unittest_suite_with_unittest_and_guards_its_count(tmp_path: Path) -> None:
    """TestCase classes and no word of pytest anywhere: init writes `python -m unittest discover`, whose
    summary (Ran N tests) the count guard reads, so dropping a test from discovery is rejected."""
    files = {"calc/__init__.py": "def double(x):\n    return x * 3\n",
             "tests/__init__.py": "",
             "tests/test_calc.py": "import unittest\nfrom calc import double\n\n\nclass T(unittest.TestCase):\n"
                                   "    def test_double(self):\n        self.assertEqual(double(2), 4)\n\n"
                                   "    def test_zero(self):\n        self.assertEqual(double(0), 0)\n",
             "setup.py": "from setuptools import setup\nsetup(name='calc')\n"}
    repo = make_repo(tmp_path / "calc", files)
    _, goal = init_goal(repo)
    assert goal["check"]["run"] == "python3 -m unittest discover -s tests -t ."
    goal = {**goal, "repo": str(repo), "check": {"run": f"{sys.executable} -m unittest discover -s tests -t ."},
            "protected": [], "editable": []}
    hide = {"description": "rename the failing test", "files": {"tests/test_calc.py": files["tests/test_calc.py"]
            .replace("def test_double", "def skipped_double")}}
    code, rows, out = scripted_run(tmp_path, goal, [hide])
    assert (code, rows[1]["verdict"]) == (1, "rejected"), out
    assert "ran 1 tests, the kept state ran 2" in out


def test_doctor_from_a_git_hook_uses_the_goals_repository_not_the_hooks(tmp_path: Path) -> None:
    """A hook of another repository runs `goalloop doctor` with GIT_DIR and GIT_WORK_TREE set, as git sets
    them for hooks. The scratch worktree is still made in the goal's repository, the check notices the
    broken source there, and the scratch worktree is gone afterwards; the hook's repository is untouched."""
    repo = make_repo(tmp_path / "proj", {"calc.py": "def double(x):\n    return 2 * x\n",
                                         "check.py": "import calc\nassert calc.double(2) == 4\n"})
    other = make_repo(tmp_path / "other", {"README.md": "another project\n"})
    goal = write_goal(tmp_path / "g.yaml", {"repo": str(repo), "check": {"run": f"{sys.executable} check.py"},
                                            "editable": ["calc.py"],
                                            "proposer": {"kind": "scripted", "steps": [{"fail": "unused"}]}})
    hook = {"GIT_DIR": str(other / ".git"), "GIT_WORK_TREE": str(other), "GIT_INDEX_FILE": str(other / ".git/index")}
    result = run_cli("doctor", str(goal), cwd=other, env=hook)
    assert result.exit_code == 0, result.output
    assert "it tests the worktree" in result.stdout, result.output
    for project in (repo, other):
        assert len(git(project, "worktree", "list").splitlines()) == 1, git(project, "worktree", "list")
        assert git(project, "status", "--porcelain") == ""
