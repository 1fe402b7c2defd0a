"""`goalloop doctor`: prove that a goal's check tests the worktree before a night is spent on it.

In a scratch worktree at base (the user's checkout is never touched) it runs the check, then breaks the
editable source files on purpose and runs it again. A check that does not notice is testing something
else: an installed copy (the usual cause: an editable install pointing at the user's checkout in a src
layout), a cached build, or nothing at all. It also reports the baseline's run time against the timeout,
whether any test ran (a runner that is not installed, a suite that collects nothing), the check's noise
when the goal measures repeatedly (or a second measurement when it does not), each with its fix.

`run` refuses nothing on its say: these are findings for a person, not rules. Its git goes through the
guarded runners of git_runner.py, so a GIT_DIR or GIT_WORK_TREE inherited from a git hook cannot point
it at another repository or at the user's checkout.
"""

from __future__ import annotations

import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from goalloop.check import COMMAND_NOT_RUNNABLE, CheckResult, run_check
from goalloop.git_runner import GitFailed, RepoGit, WorktreeGit
from goalloop.goal import Goal, format_duration
from goalloop.guards import count_tests, runner_of
from goalloop.path_rules import PathRules
from goalloop.reasons import failure_reason
from goalloop.repo_target import RepoTarget
from goalloop.starter import is_test_file

MARKER = "GOALLOOP_DOCTOR_BROKE_THIS_FILE"
SOURCE_SUFFIXES = {".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".rs", ".go", ".c", ".h", ".cc", ".cpp",
                   ".java", ".rb", ".php", ".swift", ".kt"}
BROKEN_TEXT = {".py": f'raise ImportError("{MARKER}: goalloop doctor broke this file on purpose")\n'}
_NO_MODULE = re.compile(r"No module named '?([\w.]+)'?")


@dataclass(frozen=True)
class Finding:
    level: str
    """ok, note or problem."""
    text: str
    fix: str = ""


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    def add(self, level: str, text: str, fix: str = "") -> None:
        self.findings.append(Finding(level, text, fix))


def diagnose(goal: Goal, target: RepoTarget, rules: PathRules, env: dict[str, str]) -> Diagnosis:
    """Run the goal's check in a scratch worktree on base and on deliberately broken sources."""
    found = Diagnosis()
    scratch = Path(tempfile.mkdtemp(prefix="goalloop-doctor-"))
    worktree, logs = scratch / "worktree", scratch / "logs"
    git = RepoGit(target.root, None)
    git.run("worktree", "add", "--detach", "--quiet", str(worktree), target.base_commit)
    try:
        env = dict(env, PYTHONDONTWRITEBYTECODE="1")
        base = _check(goal, worktree, env, logs, "base")
        if not _runs(goal, target, base, found):
            return found
        samples = _noise(goal, worktree, env, logs, base, found)
        broken = _break_sources(worktree, rules, _tracked(git, worktree))
        if not broken:
            found.add("note", "no editable source file to break, so whether the check tests the worktree was "
                      "not tried", "name the sources under `editable:` so doctor can break them")
            return found
        after = _check(goal, worktree, env, logs, "broken")
        if _noticed(goal, base, after, samples):
            found.add("ok", f"the check noticed when {len(broken)} source file(s) were broken on purpose: it "
                      "tests the worktree")
        else:
            text, fix = _insensitive(goal, target, worktree, env, broken)
            found.add("problem", text, fix)
    finally:
        try:
            git.run("worktree", "remove", "--force", str(worktree))
        except GitFailed as exc:
            found.add("note", f"the scratch worktree {worktree} could not be removed: {exc}",
                      f"run `git -C {target.root} worktree prune` once the folder is gone")
        shutil.rmtree(scratch, ignore_errors=True)
    return found


def _check(goal: Goal, worktree: Path, env: dict[str, str], logs: Path, prefix: str) -> CheckResult:
    return run_check(goal.check.run, cwd=worktree, env=env, timeout=goal.check.timeout, log_dir=logs,
                     metric_pattern=goal.check.metric, prefix=prefix,
                     metric_file=logs / f"{prefix}.metric.json" if goal.check.metric_file else None)


def _runs(goal: Goal, target: RepoTarget, base: CheckResult, found: Diagnosis) -> bool:
    """Findings about the check on base; False when it could not run at all."""
    output = base.process.excerpt()
    code = base.process.exit_code
    if code in COMMAND_NOT_RUNNABLE:
        found.add("problem", f"the check command could not run (exit {code}): {failure_reason(output)}",
                  "make sure the command exists in the worktree or on PATH (a virtual environment that is not "
                  "committed is only in your checkout: name it by absolute path)")
        return False
    missing = _NO_MODULE.search(output)
    runner = runner_of(goal.check.run, target.root)
    counted = count_tests(output)
    if missing and (runner is None or counted is None):
        found.add("problem", f"the check ran no test: {failure_reason(output)}",
                  f"install {missing.group(1)} in the environment the check uses, or name that environment's "
                  "python in check.run (e.g. /path/to/.venv/bin/python -m pytest)")
        return False
    if runner is not None and counted is None:
        found.add("problem", f"the check names {runner} but printed no {runner} summary, so no test is known to "
                  f"have run: {failure_reason(output, 'no output')}",
                  "run the check by hand in a clean clone and make it print the runner's summary"
                  + (" (go test needs -v)" if runner == "go" else ""))
    elif counted is not None and counted[1] == 0:
        found.add("problem", f"the check ran no test ({counted[0]} collected nothing)",
                  "point the runner at the tests (pytest's testpaths, the test folder) and run it by hand to see")
    elif counted is not None:
        found.add("ok", f"{counted[1]} tests ran ({counted[0]})")
    if goal.is_metric_goal:
        found.add("ok" if base.metric is not None else "problem",
                  f"the metric on base: {base.metric:.6g}" if base.metric is not None else
                  f"the check gave no metric on base: {base.problem}",
                  "" if base.metric is not None else "run the check by hand; it must exit 0 and print the metric")
    else:
        found.add("note", "the check passes on base: the target is met before any attempt" if base.passed else
                  f"the check fails on base: {failure_reason(output, 'exit code ' + str(code))}")
    timeout = goal.check.timeout
    share = base.seconds / timeout if timeout else 0
    found.add("problem" if share > 0.5 else "ok",
              f"the check took {base.seconds:.1f} s on base (check.timeout {format_duration(timeout)})",
              "raise check.timeout: a slower attempt would be cut off and count as a crash" if share > 0.5 else "")
    return True


def _noise(goal: Goal, worktree: Path, env: dict[str, str], logs: Path, base: CheckResult,
           found: Diagnosis) -> list[float]:
    """The metric measured on base (keep.repeats times, at least twice), with a finding about its noise."""
    if not goal.is_metric_goal or base.metric is None:
        return []
    times = max(goal.keep.repeats, 2)
    samples = [base.metric] + [r.metric for n in range(2, times + 1)
                               if (r := _check(goal, worktree, env, logs, f"noise.{n}")).metric is not None]
    if len(samples) < times:
        found.add("problem", "the check crashed when run again on the same code",
                  "make the check deterministic enough to finish every time")
        return samples
    sd = statistics.stdev(samples)
    shown = ", ".join(f"{s:.6g}" for s in samples)
    if goal.keep.repeats > 1:
        found.add("ok", f"noise: {times} runs of base gave {shown} (standard deviation {sd:.3g}); gains must "
                  f"beat it at keep.confidence {goal.keep.confidence:g}")
    elif sd > 0:
        found.add("problem", f"the metric changed between two runs of the same code ({shown}): every gain is a "
                  "single measurement", "set keep.repeats: 3 so only gains beyond the noise are kept")
    else:
        found.add("ok", f"two runs of base gave the same metric ({samples[0]:.6g})")
    return samples


def _tracked(git: RepoGit, worktree: Path) -> list[str]:
    listing = WorktreeGit(git, worktree).run("ls-files", "-z", strip=False)
    return [f for f in listing.split("\0") if f]


def _break_sources(worktree: Path, rules: PathRules, files: list[str]) -> list[str]:
    """Overwrite every editable, unprotected source file that is not a test with code that fails loudly."""
    broken = []
    for rel in files:
        path = worktree / rel
        if path.suffix not in SOURCE_SUFFIXES or rules.violations([rel]) or is_test_file(rel) or \
                not path.is_file() or path.is_symlink():
            continue
        path.write_text(BROKEN_TEXT.get(path.suffix, f"{MARKER} goalloop doctor broke this file on purpose\n"),
                        encoding="utf-8")
        broken.append(rel)
    return broken


def _noticed(goal: Goal, base: CheckResult, after: CheckResult, samples: list[float]) -> bool:
    """Whether the broken sources changed the check's verdict: a crash, the marker in its output, another
    pass/fail result or failure, or a metric beyond 4 standard deviations of the noise on base."""
    if MARKER in after.process.excerpt():
        return True
    if goal.is_metric_goal:
        if after.metric is None or base.metric is None:
            return after.metric != base.metric
        spread = statistics.stdev(samples) if len(samples) > 1 else 0.0
        return abs(after.metric - statistics.mean(samples or [base.metric])) > 4 * spread
    if base.passed != after.passed or base.process.exit_code != after.process.exit_code:
        return True
    return failure_reason(base.process.excerpt()) != failure_reason(after.process.excerpt())


def _insensitive(goal: Goal, target: RepoTarget, worktree: Path, env: dict[str, str],
                 broken: list[str]) -> tuple[str, str]:
    """What a check that did not notice broken sources is testing instead, and the fix."""
    text = (f"the check did not notice that {len(broken)} source file(s) were broken on purpose "
            f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): it is not testing the worktree")
    packages = sorted({p.split("/")[1] if p.startswith("src/") else p.split("/")[0]
                       for p in broken if p.endswith("/__init__.py")})
    where = _import_origin(goal.check.run, worktree, env, packages[0]) if packages else None
    if where and not Path(where).resolve().is_relative_to(worktree.resolve()):
        text += f"; `import {packages[0]}` loads {where}"
        if Path(where).resolve().is_relative_to(target.root.resolve()):
            text += " in your checkout (an editable install)"
    if any(p.startswith("src/") for p in broken):
        return text, ("make the check import the worktree: run it with PYTHONPATH=src (check.run: "
                      f"PYTHONPATH=src {goal.check.run}), or add pythonpath = [\"src\"] under "
                      "[tool.pytest.ini_options], or install the worktree first (pip install -e . && ...)")
    if any(p.endswith(".py") for p in broken):
        return text, ("run the tests with `python -m pytest` from the repository root (it puts the worktree "
                      "first on sys.path), or install the worktree in the check (pip install -e . && ...)")
    return text, ("make the check build and run the worktree's code: no absolute path into your checkout, no "
                  "cached build from outside the worktree")


def _import_origin(command: str, worktree: Path, env: dict[str, str], package: str) -> str | None:
    """Where the check's Python imports `package` from, asked of the interpreter the check names."""
    try:
        words = shlex.split(command.split("&&")[-1])
    except ValueError:
        return None
    assignments = [w for w in words if re.match(r"^\w+=", w)]
    python = next((w for w in words if re.match(r"^python[\d.]*$", Path(w).name)), None)
    if python is None:
        pytest = next((w for w in words if Path(w).name in ("pytest", "py.test")), None)
        python = str(Path(pytest).parent / "python") if pytest and "/" in pytest else "python3"
    probe = f"import {package}, sys; sys.stdout.write({package}.__file__ or '')"
    try:
        found = subprocess.run(["env", *assignments, python, "-c", probe], cwd=worktree, env=env,
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None

