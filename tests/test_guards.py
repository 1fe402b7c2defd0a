"""Guards read the count of tests run from the real runners' summaries, and reasons name the failing test.

Every output here comes from running the real runner on a small suite (pytest and unittest always; cargo,
jest and vitest when installed, otherwise skipped with the reason).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from goalloop.guards import TESTS_RUN, GuardSpec, broken_guards, runner_of, count_tests
from goalloop.reasons import failure_reason, strip_ansi

ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = ROOT / ".ci" / "node" / "node_modules" / ".bin"

PYTEST_SUITE = """\
import pytest
def test_ok(): assert 1
def test_bad(): assert 1 == 2
@pytest.mark.skip
def test_skipped(): pass
def test_error(missing_fixture): pass
"""
UNITTEST_SUITE = """\
import unittest
class T(unittest.TestCase):
    def test_bad(self): self.assertEqual(1, 2)
    def test_ok(self): pass
    @unittest.skip("not now")
    def test_skipped(self): pass
"""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    return proc.stdout + proc.stderr


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.mark.parametrize("flags", [["-q"], [], ["-q", "--color=yes"], ["-rA", "--color=yes"]])
def test_pytest_counts_passed_failed_and_errors_not_skipped(tmp_path: Path, flags: list[str]) -> None:
    _write(tmp_path, {"tests/test_a.py": PYTEST_SUITE})
    output = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *flags, "tests"], tmp_path)
    assert count_tests(output) == ("pytest", 3), output


def test_pytest_deselected_and_no_tests_ran(tmp_path: Path) -> None:
    _write(tmp_path, {"tests/test_a.py": PYTEST_SUITE})
    fewer = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "ok", "tests"], tmp_path)
    assert count_tests(fewer) == ("pytest", 1), fewer
    none = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "nothing", "tests"], tmp_path)
    assert count_tests(none) == ("pytest", 0), none


@pytest.mark.parametrize("verbose", [False, True])
def test_unittest_counts_ran_minus_skipped(tmp_path: Path, verbose: bool) -> None:
    _write(tmp_path, {"tests/__init__.py": "", "tests/test_u.py": UNITTEST_SUITE})
    output = _run([sys.executable, "-m", "unittest", "discover", *(["-v"] if verbose else []), "-s", "tests",
                   "-t", "."], tmp_path)
    assert count_tests(output) == ("unittest", 2), output


def test_cargo_counts_passed_and_failed_not_ignored(tmp_path: Path) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed: the cargo test summary is not checked against the real runner")
    _write(tmp_path, {
        "Cargo.toml": '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n',
        "src/lib.rs": """\
            pub fn add(a: i32, b: i32) -> i32 { a + b }
            #[cfg(test)]
            mod tests {
                use super::*;
                #[test] fn ok() { assert_eq!(add(1, 2), 3); }
                #[test] fn bad() { assert_eq!(add(1, 2), 4); }
                #[test] #[ignore] fn later() {}
            }
            """,
    })
    output = _run([cargo, "test", "--offline", "--color=always"], tmp_path,
                  env={"CARGO_TARGET_DIR": str(tmp_path / "target"), "CARGO_TERM_COLOR": "always"})
    assert count_tests(output) == ("cargo", 2), output
    assert failure_reason(output) == "test tests::bad ... FAILED"


def _node_runner(name: str) -> Path:
    path = NODE_BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in {NODE_BIN} (.ci/run installs it with npm)")
    return path


JS_SUITE = {
    "sum.test.js": """\
        const sum = (a, b) => a + b;
        test('adds', () => { expect(sum(1, 2)).toBe(3); });
        test('breaks', () => { expect(sum(1, 2)).toBe(4); });
        test.skip('later', () => {});
        """,
}


def test_jest_counts_passed_and_failed(tmp_path: Path) -> None:
    jest = _node_runner("jest")
    _write(tmp_path, {**JS_SUITE, "package.json": '{"name": "demo", "scripts": {"test": "jest"}}'})
    output = _run([str(jest), "--ci", "--colors"], tmp_path)
    assert count_tests(output) == ("jest", 2), output
    assert "breaks" in failure_reason(output)
    assert runner_of("npm test", tmp_path) == "jest"


def test_vitest_counts_passed_and_failed(tmp_path: Path) -> None:
    vitest = _node_runner("vitest")
    suite = {"sum.test.js": "import { test, expect } from 'vitest';\n" + textwrap.dedent(JS_SUITE["sum.test.js"])}
    _write(tmp_path, {**suite, "package.json": '{"name": "demo", "type": "module"}'})
    output = _run([str(vitest), "run", "--color"], tmp_path, env={"FORCE_COLOR": "1", "CI": "true"})
    assert count_tests(output) == ("vitest", 2), output
    assert "breaks" in failure_reason(output)


GO_SUITE = {
    "go.mod": "module example.com/demo\n\ngo 1.19\n",
    "demo.go": "package demo\n\nfunc Add(a, b int) int { return a + b }\n",
    "demo_test.go": """\
        package demo

        import "testing"

        func TestOk(t *testing.T) { if Add(1, 2) != 3 { t.Fatal("add") } }
        func TestBad(t *testing.T) { if Add(1, 2) != 4 { t.Fatal("add is not 4") } }
        func TestSkipped(t *testing.T) { t.Skip("later") }
        func TestTable(t *testing.T) {
            for _, name := range []string{"one", "two"} {
                t.Run(name, func(t *testing.T) {})
            }
        }
        """,
}


@pytest.mark.parametrize("flag", ["-v", "-json"])
def test_go_test_counts_top_level_tests_that_ran(tmp_path: Path, flag: str) -> None:
    """The real `go test -v` and `go test -json` on a tiny module: TestOk, TestBad and TestTable ran (its
    subtests are not counted again); TestSkipped did not."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (.ci/run installs golang-go with apt-get): go test's output is not "
                    "checked against the real runner")
    _write(tmp_path, GO_SUITE)
    cache = {"GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath"), "GOFLAGS": "-mod=mod",
             "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    output = _run([go, "test", flag, "./..."], tmp_path, env=cache)
    assert count_tests(output) == ("go", 3), output


def test_go_test_verbose_and_json_lines() -> None:
    """go test's documented formats, with a subtest and its parent; the real runner is driven above."""
    verbose = "=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n    --- PASS: TestB/sub (0.00s)\n" \
              "--- FAIL: TestB (0.00s)\nFAIL\nFAIL\texample.com/m\t0.002s\n"
    assert count_tests(verbose) == ("go", 2)
    json_lines = '{"Action":"run","Test":"TestA"}\n{"Action":"pass","Test":"TestA"}\n' \
                 '{"Action":"fail","Test":"TestB"}\n{"Action":"pass","Test":"TestB/sub"}\n'
    assert count_tests(json_lines) == ("go", 2)


def test_runner_of_reads_the_command() -> None:
    assert runner_of("python3 -m pytest -q") == "pytest"
    assert runner_of("PYTHONPATH=src .venv/bin/pytest tests") == "pytest"
    assert runner_of("python -m unittest discover") == "unittest"
    assert runner_of("cargo test --release") == "cargo"
    assert runner_of("go test -v ./...") == "go"
    assert runner_of("npx vitest run") == "vitest"
    assert runner_of("./check.sh") is None


def test_a_pass_that_ran_fewer_tests_breaks_the_guard_with_both_counts() -> None:
    spec = [GuardSpec(TESTS_RUN, None, maximize=True)]
    assert broken_guards(spec, {TESTS_RUN: 4}, {TESTS_RUN: 5}) == ["ran 4 tests, the kept state ran 5 (guard: tests run)"]
    assert broken_guards(spec, {TESTS_RUN: 5}, {TESTS_RUN: 5}) == []
    assert broken_guards(spec, {}, {TESTS_RUN: 5}) == ["printed no tests run (the kept state: 5)"]
    assert broken_guards(spec, {}, {}) == []
    memory = [GuardSpec("peak_mb", r"peak:\s*(\S+)", maximize=False, tolerance="10%")]
    assert broken_guards(memory, {"peak_mb": 109}, {"peak_mb": 100}) == []
    assert broken_guards(memory, {"peak_mb": 111}, {"peak_mb": 100})


# -- reasons -----------------------------------------------------------------------------------------------
def test_reason_names_the_failing_test_without_colour(tmp_path: Path) -> None:
    _write(tmp_path, {"tests/test_a.py": PYTEST_SUITE})
    output = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--color=yes", "tests"], tmp_path)
    assert "\x1b[" in output
    reason = failure_reason(output)
    assert reason == "FAILED tests/test_a.py::test_bad - assert 1 == 2 (and 1 more)", reason


def test_reason_prefers_the_error_line_over_a_trailing_hint() -> None:
    uv_like = ("Resolved 3 packages\n\x1b[31merror\x1b[0m: Failed to build `demo`\n"
               "  Caused by: ModuleNotFoundError: No module named 'setuptools'\n"
               "hint: See above for details.\n")
    assert failure_reason(uv_like) == "Caused by: ModuleNotFoundError: No module named 'setuptools'"
    missing = "/usr/bin/python3: No module named pytest\n"
    assert failure_reason(missing) == "/usr/bin/python3: No module named pytest"
    make = "cc -c x.c\nx.c:3:1: error: expected ';'\nmake: *** [Makefile:2: x.o] Error 1\n"
    assert failure_reason(make) == "x.c:3:1: error: expected ';'"


def test_reason_of_a_unittest_failure(tmp_path: Path) -> None:
    _write(tmp_path, {"tests/__init__.py": "", "tests/test_u.py": UNITTEST_SUITE})
    output = _run([sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."], tmp_path)
    assert failure_reason(output).startswith("FAIL: test_bad (tests.test_u.T"), output


def test_strip_ansi_removes_colour_and_cursor_codes() -> None:
    assert strip_ansi("\x1b[1;31mFAILED\x1b[0m x\x1b[2K\x1b]8;;http://a\x07link\x1b]8;;\x07") == "FAILED xlink"


# -- declared guards through a run -------------------------------------------------------------------------
def test_a_declared_guard_rejects_a_gain_that_makes_its_figure_worse(tmp_path: Path) -> None:
    """score.py prints the score and a memory figure. Attempt 1 gains score at twice the memory: rejected with
    both figures. Attempt 2 gains score within the 10% tolerance on memory: kept."""
    from conftest import make_repo, results_rows, run_cli, write_goal

    score = "import knob\nprint(f'score: {knob.SCORE}')\nprint(f'peak_mb: {knob.MB}')\n"
    repo = make_repo(tmp_path / "proj", {"knob.py": "SCORE = 1\nMB = 100\n", "score.py": score})
    goal = write_goal(tmp_path / "g.yaml", {
        "repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score:\s*(\S+)"},
        "guards": [{"name": "peak_mb", "metric": r"^peak_mb:\s*(\S+)", "direction": "minimize", "tolerance": "10%"}],
        "budget": {"iterations": 2},
        "proposer": {"kind": "scripted", "steps": [
            {"description": "faster, fatter", "files": {"knob.py": "SCORE = 2\nMB = 200\n"}},
            {"description": "faster, a little fatter", "files": {"knob.py": "SCORE = 2\nMB = 105\n"}}]},
    })
    home = tmp_path / "home"
    result = run_cli("run", str(goal), "--home", str(home), cwd=tmp_path)
    rows = results_rows(next(p.parent for p in (home / "runs").glob("*/run.json")))
    assert [r["verdict"] for r in rows] == ["baseline", "rejected", "keep"], result.output
    assert "peak_mb got worse: 200, the kept state 100 (guard: peak_mb)" in result.stdout
