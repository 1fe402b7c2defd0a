"""Hostile goal files: every one is answered at once by `validate` and by `run`, with exit 2, the file and
line, a fix, nothing created, and little memory.

The corpus is generated here (a 50 MB file and anchor bombs do not belong in git): anchor bombs of several
shapes, nesting 200 and 1,000 deep, a 50 MB file, NUL and control characters in commands and environment,
bad variable names, lone surrogates, catastrophic metric and search regexes, /dev/zero, a FIFO, symlinks and
`..` escapes and absolute paths in every path key, bools where numbers go, NaN and infinities, a deadline
given as a YAML date or read as a sexagesimal number, text that is not UTF-8, a 5,000-digit number.

Each file goes through the real CLI entry point in a child process (forked from one that imported
goalloop, see forked_cli.py); a child that is still running after TIMEOUT seconds is killed and the case
fails. How long the answers take is printed by benchmarks/hostile_goals.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import yaml

from conftest import git, make_repo
from forked_cli import ForkedCli, ForkedResult
from goalloop.goal.load import MAX_DEPTH, MAX_GOAL_BYTES, MAX_VALUES

TIMEOUT = 30.0
MAX_RSS_MIB = 200

BASE = """\
name: hostile
check:
  run: python3 score.py
  metric: '^score: (\\S+)'
proposer:
  kind: scripted
  steps:
    - files: {knob.py: "X = 2\\n"}
budget:
  iterations: 1
"""
NEXT = BASE.count("\n") + 1  # the line an appended key lands on


@dataclass(frozen=True)
class Case:
    name: str
    text: bytes | Callable[[], bytes]
    """The file's bytes, or what makes them (the 50 MB files are made only when their test runs)."""
    line: int | Callable[[bytes], int]
    """The line the answer names, or what finds it in the file's bytes (where a limit is crossed)."""
    words: tuple[str, ...]

    def content(self) -> bytes:
        return self.text() if callable(self.text) else self.text

    def expected_line(self, content: bytes) -> int:
        return self.line(content) if callable(self.line) else self.line


def expanded_past_limit(content: bytes) -> int:
    """The first line by which the file, its aliases expanded, holds more than MAX_VALUES values: the lines
    before it are composed (aliases share one node, so this is cheap) and their nodes counted as expanded."""
    def size(node: yaml.Node, seen: dict[int, int]) -> int:
        if id(node) not in seen:
            children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) \
                else node.value if isinstance(node, yaml.SequenceNode) else []
            seen[id(node)] = 1 + sum(size(child, seen) for child in children)
        return seen[id(node)]

    lines = content.decode("utf-8").splitlines(keepends=True)
    for end in range(1, len(lines) + 1):
        try:
            root = yaml.compose("".join(lines[:end]), Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            continue
        if root is not None and size(root, {}) > MAX_VALUES:
            return end
    raise AssertionError("the file never expands past the limit")


def nested_past_limit(content: bytes) -> int:
    """The first line indented MAX_DEPTH levels of two spaces: the top mapping is one level, so a block there
    is the first one deeper than MAX_DEPTH."""
    lines = content.decode("utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if len(line) - len(line.lstrip(" ")) == 2 * MAX_DEPTH)


def past_size_limit(content: bytes) -> int:
    """The line that holds the file's byte number MAX_GOAL_BYTES + 1."""
    return content[:MAX_GOAL_BYTES].count(b"\n") + 1


def appended(name: str, lines: str, words: tuple[str, ...], line: int = NEXT) -> Case:
    return Case(name, (BASE + lines).encode("utf-8", "surrogatepass"), line, words)


def replaced(name: str, old: str, new: str, line: int, words: tuple[str, ...]) -> Case:
    assert old in BASE, old
    return Case(name, BASE.replace(old, new, 1).encode("utf-8", "surrogatepass"), line, words)


def command_proposer(name: str, env: str, words: tuple[str, ...]) -> Case:
    """A command proposer with `env` (a flow mapping) on line 8."""
    text = BASE.replace('kind: scripted\n  steps:\n    - files: {knob.py: "X = 2\\n"}',
                        f'kind: command\n  run: "true"\n  env: {env}')
    return Case(name, text.encode("utf-8", "surrogatepass"), 8, words)


def anchor_bombs() -> list[Case]:
    """Billion laughs: each level refers `width` times to the one below, so `depth` levels expand to
    width**depth nodes; as lists, as mappings, inside a real key, and through merge keys."""
    cases = []
    for width, depth in ((9, 9), (20, 6), (4, 16)):
        lines = [f'l0: &l0 [{", ".join(["lol"] * width)}]']
        lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, depth)]
        cases.append(Case(f"bomb_lists_{width}x{depth}", ("\n".join(lines) + "\n" + BASE).encode(), expanded_past_limit, ("alias",)))
        lines = [f"m0: &m0 {{{', '.join(f'k{i}: lol' for i in range(width))}}}"]
        lines += [f"m{n}: &m{n} {{{', '.join(f'k{i}: *m{n - 1}' for i in range(width))}}}" for n in range(1, depth)]
        cases.append(Case(f"bomb_mappings_{width}x{depth}", ("\n".join(lines) + "\n" + BASE).encode(), expanded_past_limit, ("alias",)))
    levels = [f"x0: &x0 [{', '.join(['a'] * 10)}]"] + [
        f"x{n}: &x{n} [{', '.join([f'*x{n - 1}'] * 10)}]" for n in range(1, 8)
    ]
    inside = BASE.replace("name: hostile\n", "name: hostile\ncontext:\n" + "".join(f"  - {x}\n" for x in levels)
                          + "  - *x7\n")
    cases.append(Case("bomb_inside_context", inside.encode(), expanded_past_limit, ("alias",)))
    merges = ["b0: &b0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"] + [
        f"b{n}: &b{n} {{<<: [{', '.join([f'*b{n - 1}'] * 8)}], z{n}: {n}}}" for n in range(1, 9)
    ]
    cases.append(Case("bomb_merge_keys", ("\n".join(merges) + "\n" + BASE).encode(), expanded_past_limit, ("alias",)))
    return cases


def deep_nesting() -> list[Case]:
    block = "instructions:\n" + "".join(f"{'  ' * (n + 1)}k{n}:\n" for n in range(200)) + "  " * 201 + "end\n"
    return [
        appended("deep_flow_lists_200", "context: " + "[" * 200 + "a" + "]" * 200 + "\n", ("nested", "deep")),
        appended("deep_flow_lists_1000", "context: " + "[" * 1000 + "]" * 1000 + "\n", ("nested", "deep")),
        appended("deep_flow_mappings_500", "keep: " + "{a: " * 500 + "1" + "}" * 500 + "\n", ("nested", "deep")),
        Case("deep_block_mappings_200", (BASE + block).encode(), nested_past_limit, ("nested", "deep")),
        appended("deep_block_lists_200", "context:\n" + "".join(f"{'  ' * (n + 1)}-\n" for n in range(200))
                 + "  " * 201 + "x\n", ("nested", "deep"), line=nested_past_limit),
    ]


def huge_files() -> list[Case]:
    def comments() -> bytes:
        return (BASE + ("# " + "x" * 98 + "\n") * (50 * 1024 * 1024 // 100)).encode()

    def one_value() -> bytes:
        return (BASE + "instructions: '" + "y" * (50 * 1024 * 1024) + "'\n").encode()

    return [
        Case("file_50mb_of_comments", comments, past_size_limit, ("MiB", "at most")),
        Case("file_50mb_one_value", one_value, NEXT, ("MiB", "at most")),
        Case("number_5000_digits", BASE.replace("iterations: 1", "iterations: " + "9" * 5000).encode(), 10,
             ("5,000 digits", "at most 18 digits")),
    ]


def control_characters() -> list[Case]:
    return [
        replaced("nul_in_check_run", "run: python3 score.py", 'run: "python3 score.py\\0"', 3,
                 ("check.run", "NUL", "fix")),
        replaced("nul_in_check_run_middle", "run: python3 score.py", 'run: "python3\\0 score.py"', 3,
                 ("check.run", "NUL")),
        replaced("escape_in_check_run", "run: python3 score.py", 'run: "python3 score.py \\e[31m"', 3,
                 ("check.run", "control character")),
        replaced("carriage_return_in_check_run", "run: python3 score.py", 'run: "python3 score.py\\r"', 3,
                 ("check.run", "control character")),
        appended("nul_in_holdout_run", "holdout:\n  run: \"python3 score.py\\0\"\n  metric: '^score: (\\S+)'\n",
                 ("holdout.run", "NUL"), line=NEXT + 1),
        replaced("nul_in_env_per_slot", "  metric:", '  env_per_slot: {CUDA: "0\\0"}\n  metric:', 4,
                 ("check.env_per_slot", "NUL")),
        command_proposer("nul_in_env_value", '{A: "x\\0y"}', ("proposer.env", "NUL")),
        command_proposer("nul_in_env_name", '{"A\\0B": "x"}', ("proposer.env",)),
        command_proposer("env_name_with_equals", '{"A=B": "x"}', ("proposer.env", "'A=B'", "variable name")),
        command_proposer("env_name_starting_with_digit", '{"1ABC": "x"}', ("proposer.env", "variable name")),
        command_proposer("env_name_with_space", '{"MY VAR": "x"}', ("proposer.env", "variable name", "MY_VAR")),
        command_proposer("env_name_with_dash", '{"MY-VAR": "x"}', ("proposer.env", "variable name", "MY_VAR")),
        command_proposer("env_name_empty", '{"": "x"}', ("proposer.env", "variable name")),
        appended("raw_nul_byte_line_11", "instructions: a\0b\n", ("control character", "NUL")),
        appended("raw_bell_byte_line_11", "instructions: a\x07b\n", ("control character",)),
        appended("nul_in_context_path", 'context: ["a\\0b"]\n', ("context[0]", "NUL")),
    ]


def surrogates() -> list[Case]:
    return [
        appended("surrogate_in_instructions", 'instructions: "fix \\uD800 it"\n', ("instructions", "surrogate")),
        appended("surrogate_low_in_instructions", 'instructions: "\\uDFFF"\n', ("instructions", "surrogate")),
        replaced("surrogate_in_check_run", "run: python3 score.py", 'run: "python3 \\uDC80score.py"', 3,
                 ("check.run", "surrogate")),
        appended("surrogate_in_unknown_key", '"bad\\uD83Dkey": 1\n', ("surrogate",)),
        appended("surrogate_in_protected", 'protected: ["\\uD800"]\n', ("protected[0]", "surrogate")),
    ]


def regexes() -> list[Case]:
    def metric(name: str, pattern: str) -> Case:
        return replaced(name, "metric: '^score: (\\S+)'", f"metric: '{pattern}'", 4,
                        ("check.metric", "repeat inside a repeat", "fix"))

    search = BASE.replace(
        'kind: scripted\n  steps:\n    - files: {knob.py: "X = 2\\n"}',
        "kind: search\n  params:\n    x: {file: knob.py, pattern: 'X = ((\\d+)*)$', low: 1, high: 9}",
    )
    return [
        metric("redos_nested_plus", "^(a+)+$"),
        metric("redos_nested_star", "^score: (\\d*)*x"),
        metric("redos_group_of_groups", "^((ab)*c?)+$"),
        metric("redos_noncapturing", "(?:\\s*\\w+)*:(\\S+)"),
        appended("redos_guard_metric", "guards:\n  - name: slow\n    metric: '(a+)+$'\n",
                 ("guards[0].metric", "repeat inside a repeat", "(a+)+"), line=NEXT + 2),
        appended("redos_holdout_metric", "holdout:\n  run: python3 score.py\n  metric: '(x+x+)+y'\n",
                 ("holdout.metric", "repeat inside a repeat"), line=NEXT + 2),
        Case("redos_search_pattern", search.encode(), 8, ("proposer.params.x.pattern", "repeat inside a repeat")),
    ]


def paths() -> list[Case]:
    cases = [
        appended("context_dev_zero", "context: [/dev/zero]\n", ("context[0]", "absolute", "inside the repository")),
        appended("context_fifo", "context: [pipe]\n", ("context[0]", "not a regular file")),
        appended("context_folder", "context: [src]\n", ("context[0]", "not a regular file")),
        appended("context_escape", "context: ['../../../etc/passwd']\n", ("context[0]", "outside the repository")),
        appended("context_symlink_out", "context: [leak]\n", ("context[0]", "outside the repository")),
        appended("context_second_item", "context: [knob.py, /etc/passwd]\n", ("context[1]", "absolute")),
        replaced("check_files_absolute", "  metric:", "  files: ['/etc/hostname']\n  metric:", 4,
                 ("check.files[0]", "absolute")),
        replaced("check_files_escape", "  metric:", "  files: [src/../../x]\n  metric:", 4,
                 ("check.files[0]", "outside the repository")),
        appended("protected_escape", "protected: ['../../etc']\n", ("protected[0]", "outside the repository")),
        appended("editable_absolute_glob", "editable: ['/etc/**']\n", ("editable[0]", "absolute", "etc/**")),
        appended("holdout_files_escape", "holdout:\n  run: python3 score.py\n  metric: '^score: (\\S+)'\n"
                 "  files: [../secret.txt]\n", ("holdout.files[0]", "outside the repository"), line=NEXT + 3),
        appended("instructions_file_escape", "instructions_file: ../../../etc/passwd\n",
                 ("instructions_file", "outside the repository")),
        appended("instructions_file_absolute", "instructions_file: /etc/passwd\n", ("instructions_file", "absolute")),
        appended("instructions_file_dev_zero", "instructions_file: /dev/zero\n", ("instructions_file", "absolute")),
        appended("instructions_file_fifo", "instructions_file: pipe\n", ("instructions_file", "not a regular file")),
        appended("instructions_file_symlink_out", "instructions_file: leak\n",
                 ("instructions_file", "outside the repository")),
        appended("instructions_file_too_big", "instructions_file: big.md\n", ("instructions_file", "MiB")),
        replaced("scripted_files_escape", '{knob.py: "X = 2\\n"}', '{../outside.py: "x"}', 8,
                 ("proposer.steps[0].files", "outside the repository")),
        Case("search_file_escape", BASE.replace(
            'kind: scripted\n  steps:\n    - files: {knob.py: "X = 2\\n"}',
            "kind: search\n  params:\n    x: {file: ../knob.py, pattern: 'X = (\\d+)', low: 1, high: 9}",
        ).encode(), 8, ("proposer.params.x.file", "outside the repository")),
    ]
    return cases


def scalars() -> list[Case]:
    return [
        replaced("iterations_true", "iterations: 1", "iterations: true", 10, ("budget.iterations", "true", "number")),
        replaced("iterations_yes", "iterations: 1", "iterations: yes", 10, ("budget.iterations", "number")),
        appended("parallel_on", "parallel: on\n", ("parallel", "number")),
        appended("repeats_true", "keep:\n  repeats: true\n", ("keep.repeats", "number"), line=NEXT + 1),
        appended("target_value_false", "target:\n  value: false\n", ("target.value", "number"), line=NEXT + 1),
        appended("min_delta_nan", "keep:\n  min_delta: .nan\n", ("keep.min_delta", "nan", "number"), line=NEXT + 1),
        appended("min_delta_minus_inf", "keep:\n  min_delta: -.inf\n", ("keep.min_delta", "number"), line=NEXT + 1),
        appended("target_value_inf", "target:\n  value: .inf\n", ("target.value", "finite"), line=NEXT + 1),
        appended("target_value_nan", "target:\n  value: .NaN\n", ("target.value", "finite"), line=NEXT + 1),
        appended("deadline_yaml_date", "  deadline: 2026-12-01\n", ("budget.deadline", "time of day", '"2026-12-01T07:30"')),
        appended("deadline_quoted_date", '  deadline: "2026-12-01"\n', ("budget.deadline", "time of day")),
        appended("deadline_sexagesimal", "  deadline: 7:30\n", ("budget.deadline", 'deadline: "07:30"')),
        appended("deadline_sexagesimal_evening", "  deadline: 23:05\n", ("budget.deadline", 'deadline: "23:05"')),
    ]


def encodings() -> list[Case]:
    latin1 = BASE.replace("name: hostile\n", "name: hostile\n# comment\n# comment\n# caf\xe9\n").encode("latin-1")
    return [
        Case("latin1_on_line_4", latin1, 4, ("not UTF-8", "line 4")),
        Case("utf16_file", BASE.encode("utf-16"), 1, ("not UTF-8", "UTF-8")),
        Case("invalid_byte_line_11", BASE.encode() + b"instructions: \xff\xfe\n", NEXT, ("not UTF-8",)),
        Case("overlong_utf8", BASE.encode() + b"instructions: \xc0\xaf\n", NEXT, ("not UTF-8",)),
    ]


CASES = anchor_bombs() + deep_nesting() + huge_files() + control_characters() + surrogates() + regexes() \
    + paths() + scalars() + encodings()
PLACE = re.compile(r"^(?:error: )?(?P<path>/\S+?):(?P<line>\d+): ", re.MULTILINE)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> ForkedCli:
    runner = ForkedCli(tmp_path_factory.mktemp("forked-output"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository every hostile goal sits in: score.py, knob.py, src/, a committed symlink leaving the
    repository, a FIFO and a 3 MB file in the checkout."""
    root = tmp_path_factory.mktemp("hostile")
    repo = make_repo(root / "proj", {"score.py": "import knob\nprint(f'score: {knob.X}')\n", "knob.py": "X = 1\n",
                                     "src/a.py": "A = 1\n"})
    os.symlink("/etc/passwd", repo / "leak")
    git(repo, "add", "leak")
    git(repo, "commit", "-q", "-m", "a symlink out")
    os.mkfifo(repo / "pipe")
    (repo / "big.md").write_text("z" * (3 << 20), encoding="utf-8")
    (repo / ".git" / "info" / "exclude").write_text("pipe\nbig.md\n*.yaml\n", encoding="utf-8")
    return repo


def assert_answered(result: ForkedResult, goal: Path, case: Case) -> None:
    assert not result.timed_out, f"{case.name}: no answer within {TIMEOUT:.0f} s"
    assert result.exit_code == 2, f"{case.name}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    places = list(PLACE.finditer(result.stderr))
    assert places, f"{case.name}: no file:line in\n{result.stderr}"
    assert places[0].group("path") == str(goal), result.stderr
    line = case.expected_line(goal.read_bytes())
    assert int(places[0].group("line")) == line, f"{case.name}: line {line} expected\n{result.stderr}"
    assert "\n  fix: " in result.stderr, f"{case.name}: no fix in\n{result.stderr}"
    for word in case.words:
        assert word.lower() in result.stderr.lower(), f"{case.name}: {word!r} not in\n{result.stderr}"
    assert result.max_rss_mib < MAX_RSS_MIB, f"{case.name}: {result.max_rss_mib:.0f} MiB"


def test_the_corpus_has_every_kind_the_issue_names() -> None:
    names = {c.name for c in CASES}
    assert len(names) == len(CASES)
    for kind in ("bomb_", "deep_", "file_50mb", "nul_in_check_run", "nul_in_env_value", "env_name_", "surrogate_",
                 "redos_", "context_dev_zero", "context_fifo", "escape", "absolute", "iterations_true",
                 "min_delta_nan", "deadline_yaml_date", "latin1", "deadline_sexagesimal"):
        assert any(kind in name for name in names), kind
    assert len(CASES) >= 70
    assert all(c.line for c in CASES), "every answer names a real line"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_and_run_answer_at_once(case: Case, project: Path, cli: ForkedCli, tmp_path: Path) -> None:
    goal = project / f"{case.name}.yaml"
    goal.write_bytes(case.content())
    try:
        assert_answered(cli("validate", str(goal), cwd=project, timeout=TIMEOUT), goal, case)

        refs, worktrees = git(project, "for-each-ref"), git(project, "worktree", "list", "--porcelain")
        home = tmp_path / "home"
        home.mkdir()
        assert_answered(cli("run", str(goal), "--home", str(home), cwd=tmp_path, timeout=TIMEOUT), goal, case)
        assert list(home.iterdir()) == [], "run created something in --home"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"], "run created something in the cwd"
        assert git(project, "for-each-ref") == refs, "run created a branch or a ref"
        assert git(project, "worktree", "list", "--porcelain") == worktrees
        assert not (project.parent / "outside.py").exists()
    finally:
        goal.unlink()


def test_the_base_goal_is_valid(project: Path, cli: ForkedCli) -> None:
    """The hostile cases are mistakes made to a goal that is otherwise fine."""
    goal = project / "base-ok.yaml"
    goal.write_text(BASE + "context: [knob.py, leak-not-there.md]\n", encoding="utf-8")
    result = cli("validate", str(goal), cwd=project)
    goal.unlink()
    assert result.exit_code == 0, result.output


MEASURE = """
import json, resource, subprocess, sys
try:
    code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, timeout=float(sys.argv[1])).returncode
except subprocess.TimeoutExpired:
    code = "timed out"
print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))
"""


def fresh_interpreter(*args: str, cwd: Path, timeout: float = TIMEOUT) -> tuple[int, str, float]:
    """`python -m goalloop ARGS` in a new interpreter: exit code, stderr, and its peak memory in MiB.

    The memory is read with getrusage(RUSAGE_CHILDREN) in a small parent of its own: a process forked from
    this (large) test process would count the pages it inherited before exec."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(timeout), sys.executable, "-m", "goalloop", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout + 30,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    code, peak_kib = json.loads(proc.stdout)
    assert code != "timed out", f"no answer within {timeout:.0f} s"
    return code, proc.stderr, peak_kib / 1024


@pytest.mark.parametrize("name", ["bomb_lists_9x9", "deep_flow_lists_1000", "file_50mb_one_value", "context_dev_zero"])
def test_the_heaviest_cases_stay_small_in_a_fresh_interpreter(name: str, project: Path) -> None:
    """The same answers from `python -m goalloop` itself, its peak memory read by wait4."""
    case = next(c for c in CASES if c.name == name)
    goal = project / f"{name}.yaml"
    goal.write_bytes(case.content())
    try:
        code, stderr, peak = fresh_interpreter("validate", str(goal), cwd=project)
    finally:
        goal.unlink()
    assert code == 2, stderr
    assert f"{goal}:" in stderr and "fix:" in stderr, stderr
    assert peak < MAX_RSS_MIB, f"{peak:.0f} MiB"


def test_a_slow_metric_pattern_that_validation_lets_through_is_cut_off_by_its_time_bound(
    project: Path, tmp_path: Path
) -> None:
    """'(a|aa)+$' has no repeat inside a repeat, yet backtracks exponentially on a long run of a's. The match
    gives up after its time bound and the run stops with exit 2 at check.metric; with Python's `re`, the
    same match does not end within 10 s (the attack the bound defends against)."""
    line = "a" * 5000 + "b"
    goal = project / "slow-metric.yaml"
    goal.write_text(BASE.replace("python3 score.py", f"python3 -c 'print(\"{line}\")'")
                    .replace("'^score: (\\S+)'", "'(a|aa)+$'"), encoding="utf-8")
    try:
        code, stderr, _ = fresh_interpreter("run", str(goal), "--home", str(tmp_path), cwd=tmp_path, timeout=120)
    finally:
        goal.unlink()
    assert code == 2, stderr
    assert f"{goal}:4: check.metric:" in stderr and "took more than" in stderr and "fix:" in stderr, stderr

    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", f"import re; re.search(r'(a|aa)+$', '{line}')"], timeout=10)


SLOW_LINE_WHEN_X_IS_2 = "import knob\nprint(f'score: {knob.X}')\nprint('a' * 3000 + 'b' if knob.X == 2 else 'mb: 5')\n"


def slow_guard_goal(tmp_path: Path, score: str) -> tuple[Path, Path]:
    """A goal with `guards: [{name: slow, metric: '(a|aa)+$'}]` (no repeat inside a repeat: validation lets it
    through) over a check that prints `score.py`'s output; returns (the goal, the repository)."""
    from conftest import write_goal

    repo = make_repo(tmp_path / "proj", {"score.py": score, "knob.py": "X = 1\n"})
    goal = write_goal(tmp_path / "slow-guard.yaml", {
        "repo": str(repo), "check": {"run": f"{sys.executable} score.py", "metric": r"^score: (\S+)"},
        "guards": [{"name": "mb", "metric": r"^mb: (\S+)"}, {"name": "slow", "metric": "(a|aa)+$"}],
        "budget": {"iterations": 1},
        "proposer": {"kind": "scripted", "steps": [{"files": {"knob.py": "X = 2\n"}}]},
    })
    return goal, repo


def test_a_guard_pattern_slow_on_the_baseline_is_a_goal_problem_at_its_line(cli: ForkedCli, tmp_path: Path) -> None:
    """The baseline's output makes the guard backtrack: the run stops with exit 2 at guards[1].metric, with the
    fix, and leaves nothing behind; it is no internal error."""
    goal, repo = slow_guard_goal(tmp_path, "print('score: 1')\nprint('a' * 3000 + 'b')\n")
    assert cli("validate", str(goal), cwd=tmp_path).exit_code == 0
    refs = git(repo, "for-each-ref")
    home = tmp_path / "home"
    result = cli("run", str(goal), "--home", str(home), cwd=tmp_path, timeout=TIMEOUT)
    assert not result.timed_out
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    line = goal.read_text(encoding="utf-8").splitlines().index("- name: slow") + 2
    assert f"{goal}:{line}: guards[1].metric: the guard slow gave no result in time" in result.stderr, result.stderr
    assert "took more than" in result.stderr and "\n  fix: " in result.stderr, result.stderr
    assert git(repo, "for-each-ref") == refs
    assert not home.exists() or not any((home / "runs").glob("*/run.json"))


def test_a_guard_pattern_slow_on_an_attempt_rejects_that_attempt_naming_the_guard(cli: ForkedCli,
                                                                                   tmp_path: Path) -> None:
    """The baseline prints nothing the guard is slow on; attempt 1's output makes it backtrack. That attempt
    is rejected with the guard named (it cannot be shown not to break it) and the run ends as usual."""
    from conftest import only_run_dir, results_rows

    goal, _ = slow_guard_goal(tmp_path, SLOW_LINE_WHEN_X_IS_2)
    home = tmp_path / "home"
    result = cli("run", str(goal), "--home", str(home), cwd=tmp_path, timeout=TIMEOUT)
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output, result.output
    rows = results_rows(only_run_dir(home))
    assert [r["verdict"] for r in rows] == ["baseline", "rejected"], rows
    events = (only_run_dir(home) / "events.jsonl").read_text(encoding="utf-8")
    for said in (result.stdout, events):
        assert "the guard slow is broken for this attempt: the pattern `(a|aa)+$` took more than" in said, said
        assert "(fix guards[1].metric in the goal)" in said, said
