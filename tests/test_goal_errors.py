"""Every kind of mistake a person makes in a goal file gets one clear message: `file:line: key: what is wrong`
and `  fix: what to write instead`, at the line to change, exit code 2, no traceback, nothing created.

The corpus is tests/goals_malformed/*.yaml, one realistic mistake a file (its first line says which). Each is
copied next to a real git repository and checked through the real CLI; EXPECTED below says, for each, at
which line each mistake must be reported and which words the message must hold.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from goalloop.errors import GoalError
from goalloop.goal import parse_goal

from conftest import CliResult, git, make_repo, run_cli

CORPUS = Path(__file__).parent / "goals_malformed"

# file stem -> one (line, words the message must hold) per mistake in it, in file order.
EXPECTED: dict[str, list[tuple[int, tuple[str, ...]]]] = {
    # YAML that does not parse
    "yaml_tab_indent": [(5, ("tab", "spaces"))],
    "yaml_unclosed_quote": [(3, ('"', "never closed"))],
    "yaml_colon_in_value": [(3, ("quotes", 'instructions: "Fix the parser bug: it drops the last line."'))],
    "yaml_bad_indent": [(6, ("indented deeper than run:", "indent it by 2 spaces"))],
    "key_without_colon": [(5, ("colon", "write run: python3 bench.py"))],
    "flow_mapping_unclosed": [(6, ("{", "never closed", "}"))],
    "metric_double_quotes": [(6, ("escape", "single quotes", r"metric: '^time: (\d+\.\d+)'"))],
    "check_run_backticks": [(5, ("`", 'run: "`make test`"'))],
    "editable_glob_star": [(4, ("alias", 'editable: [src/**, "*.py"]'))],
    "duplicate_key": [(11, ("budget", "twice", "line 6"))],
    "empty": [(1, ("empty", "goalloop init"))],
    "only_comments": [(1, ("empty", "goalloop init"))],
    "top_level_list": [(2, ("mapping", "list", "remove the '- '"))],
    # unknown keys
    "unknown_key_typo": [(7, ("budget.iteratons", "unknown key", "did you mean 'iterations'"))],
    "unknown_key_top": [(3, ("instruction", "did you mean 'instructions'"))],
    "unknown_key_far": [(4, ("owner", "unknown key", "allowed here", "instructions_file"))],
    "proposer_unknown_key": [(9, ("proposer.timout", "did you mean 'timeout'"))],
    "scripted_step_unknown_key": [(12, ("proposer.steps[1].file", "did you mean 'files'"))],
    # wrong values and types
    "negative_iterations": [(6, ("budget.iterations", "-3", "at least 1"))],
    "iterations_words": [(7, ("budget.iterations", "'ten'", "whole number", "iterations: 10"))],
    "iterations_fraction": [(7, ("budget.iterations", "2.5", "whole number"))],
    "time_words": [(8, ("budget.time", "'10 minutes'", "not a duration", "write 10m"))],
    "usd_words": [(7, ("budget.usd", "'five'", "sum of money", "5.00"))],
    "direction_british": [(8, ("target.direction", "'maximise'", "did you mean 'maximize'"))],
    "list_for_mapping": [(6, ("budget", "list", "remove the '- '"))],
    "string_for_list": [(4, ("protected", "list", 'protected: ["tests/**"]'))],
    "name_with_spaces": [(2, ("name", "git branch", "name: make-it-faster"))],
    "temperature_too_high": [(8, ("proposer.temperature", "1.5", "at most 1"))],
    "target_value_words": [(8, ("target.value", "'95%'", "value: 95"))],
    "check_timeout_zero": [(6, ("check.timeout", "more than zero", "10m"))],
    "several_mistakes": [
        (6, ("check.timeout", "write 10m")),
        (8, ("target.direction", "did you mean 'maximize'")),
        (10, ("budget.iteratons", "did you mean 'iterations'")),
    ],
    # the check
    "missing_check": [(2, ("check", "missing", "run: python3 -m pytest -q"))],
    "missing_check_run": [(4, ("check.run", "missing", "run:"))],
    "check_string": [(4, ("check", "'python3 -m pytest -q'", "run: python3 -m pytest -q"))],
    "check_run_empty": [(5, ("check.run", "no value", "run: python3 -m pytest -q"))],
    "metric_regex_invalid": [(6, ("check.metric", "regular expression", "missing )", "single quotes"))],
    "target_value_without_metric": [(8, ("target.value", "metric", "pass/fail"))],
    # the proposer
    "proposer_missing": [(2, ("proposer", "missing", "kind: command"))],
    "proposer_string": [(6, ("proposer", "'claude'", "kind: claude"))],
    "proposer_kind_missing": [(6, ("proposer", "kind", "missing", "command", "claude", "search", "scripted"))],
    "proposer_kind_unknown": [(7, ("proposer.kind", "'cursor-agent'", "kind: command", "GOALLOOP_PROMPT_FILE"))],
    "agent_kind_typo": [(7, ("proposer.kind", "'claude_code'", "did you mean 'claude-code'"))],
    "proposer_kind_typo": [(7, ("proposer.kind", "'serach'", "did you mean 'search'"))],
    "command_without_run": [(6, ("proposer.run", "missing", "GOALLOOP_PROMPT_FILE", "kind: claude-code"))],
    "scripted_empty_steps": [(8, ("proposer.steps", "empty", "at least one"))],
    "search_low_above_high": [(15, ("proposer.params.lr.low", "less than high", "low: 0.0001 and high: 0.1"))],
    "search_empty_choices": [(15, ("proposer.params.optimizer.choices", "empty", "at least one value"))],
    "search_pattern_no_group": [(14, ("proposer.params.batch.pattern", "group", "parentheses"))],
    # instructions, repo and base: found only once the file itself is valid
    "both_instructions": [(4, ("instructions_file", "both", "keep one"))],
    "instructions_file_missing": [(3, ("instructions_file", "programme.md", "did you mean program.md"))],
    "repo_missing": [(3, ("repo", "no-such-project", "does not exist"))],
    "repo_not_git": [(3, ("repo", "plain-folder", "not a git repository", "git init"))],
    "repo_subfolder": [(3, ("repo", "not a git repository", "folder inside", "top of the repository"))],
    "base_unresolved": [(3, ("base", "'mian'", "did you mean 'main'"))],
}

# A few go through `goalloop run` too, which must stop before creating anything.
THROUGH_RUN = [
    "yaml_unclosed_quote",
    "missing_check",
    "negative_iterations",
    "target_value_without_metric",
    "instructions_file_missing",
    "repo_not_git",
    "base_unresolved",
]

PARAGRAPH = re.compile(r"^(?:error: )?(?P<path>/\S+?):(?P<line>\d+): ", re.MULTILINE)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `proj` (a git repo with program.md, bench.py, src/; the corpus copied into its root) and
    `plain-folder` (not a repository), so that `repo: ../plain-folder` and `base: mian` mean what they say."""
    root = tmp_path_factory.mktemp("goal-errors")
    project = make_repo(
        root / "proj", {"program.md": "Make it faster.\n", "bench.py": "print('time: 1.0')\n", "src/knob.py": "X = 1\n"}
    )
    (root / "plain-folder").mkdir()
    for source in CORPUS.glob("*.yaml"):
        shutil.copyfile(source, project / source.name)
    return root


@pytest.fixture(scope="module")
def validated(place: Path) -> dict[str, CliResult]:
    """`goalloop validate` on every corpus file, run side by side (each is a separate process)."""

    def validate(stem: str) -> CliResult:
        return run_cli("validate", str(place / "proj" / f"{stem}.yaml"), cwd=place)

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        return dict(zip(EXPECTED, pool.map(validate, EXPECTED)))


def paragraphs(stderr: str) -> list[tuple[str, int, str]]:
    """(path, line, text) for each mistake reported: from one `path:line:` to the next."""
    starts = list(PARAGRAPH.finditer(stderr))
    ends = [m.start() for m in starts[1:]] + [len(stderr)]
    return [(m.group("path"), int(m.group("line")), stderr[m.start() : end]) for m, end in zip(starts, ends)]


def assert_reported(result: CliResult, goal: Path, stem: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    found = paragraphs(result.stderr)
    expected = EXPECTED[stem]
    assert [line for _, line, _ in found] == [line for line, _ in expected], result.stderr
    for (path, _, text), (_, words) in zip(found, expected):
        assert path == str(goal), text
        assert "\n  fix: " in text, text
        for word in words:
            assert word.lower() in text.lower(), f"{word!r} not in:\n{text}"


def test_the_corpus_is_complete() -> None:
    stems = {p.stem for p in CORPUS.glob("*.yaml")}
    assert stems == set(EXPECTED), stems ^ set(EXPECTED)
    assert len(stems) >= 25


@pytest.mark.parametrize("stem", list(EXPECTED))
def test_validate_names_the_line_and_the_fix(stem: str, place: Path, validated: dict[str, CliResult]) -> None:
    result = validated[stem]
    assert_reported(result, place / "proj" / f"{stem}.yaml", stem)
    assert result.stdout == "", result.stdout


@pytest.mark.parametrize("stem", THROUGH_RUN)
def test_run_stops_before_creating_anything(stem: str, place: Path, tmp_path: Path) -> None:
    project = place / "proj"
    refs_before = git(project, "for-each-ref")
    worktrees_before = git(project, "worktree", "list", "--porcelain")
    home = tmp_path / "home"
    home.mkdir()

    result = run_cli("run", str(project / f"{stem}.yaml"), "--home", str(home), cwd=tmp_path)

    assert_reported(result, project / f"{stem}.yaml", stem)
    assert list(home.iterdir()) == [], "run created something in --home"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"], "run created something in the current directory"
    assert git(project, "for-each-ref") == refs_before, "run created a branch or a ref"
    assert git(project, "worktree", "list", "--porcelain") == worktrees_before


def mangled(count: int, seed: int = 20240601) -> list[str]:
    """Random edits of the corpus: a stray tab, colon, quote, bracket, dash; a deleted or repeated line."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.yaml"))]
    texts = [t for t in texts if t.strip()]
    pieces = list("\t:\"'-[]{}*&!%@`|>#\n 0.\\") + [": ", "- ", "  ", "null", "---", "\n  ", "yes"]
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            roll = rng.random()
            if roll < 0.45:
                text = text[:at] + rng.choice(pieces) + text[at:]
            elif roll < 0.75:
                text = text[:at] + text[at + rng.randint(1, 6) :]
            else:
                lines = text.splitlines(keepends=True)
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
                text = "".join(lines)
        found.append(text)
    return found


def test_a_mangled_goal_file_is_never_a_traceback(place: Path) -> None:
    """Random edits of the corpus give a GoalError naming the file, a line and a fix, or a valid goal; never
    another exception."""
    source = place / "proj" / "mangled.yaml"
    for text in mangled(1500):
        try:
            parse_goal(text, source)
        except GoalError as exc:
            message = str(exc)
            assert message.startswith(f"{source}:") and "\n  fix: " in message, (text, message)
            for _, line, _ in paragraphs(message):
                assert 1 <= line <= max(1, text.count("\n") + 1), (text, message)


def test_the_values_built_from_the_nodes_composed_once_are_those_a_second_parse_gives() -> None:
    """goal/load.py composes the YAML once (for the lines and the duplicate keys) and builds the values from
    those nodes rather than parsing the text again: for the corpus, every goal shipped and 1,500 mangled
    files, the values (or the error) are exactly what `yaml.load` of the text gives."""
    import yaml

    from goalloop.goal.load import _UniqueKeyLoader

    def outcome(read):  # noqa: ANN001, ANN202
        try:
            return "values", read()
        except yaml.YAMLError as exc:
            return "error", str(exc)

    def from_nodes(text: str) -> object:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        loader = _UniqueKeyLoader("")
        try:
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()

    root = Path(__file__).resolve().parent.parent
    files = sorted([*CORPUS.glob("*.yaml"), *(root / "goals").glob("*.yaml")])
    for text in [p.read_text(encoding="utf-8") for p in files] + mangled(1500, seed=7):
        assert outcome(lambda: from_nodes(text)) == outcome(lambda: yaml.load(text, Loader=_UniqueKeyLoader)), text
