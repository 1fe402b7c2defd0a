"""Regexes from the goal: matched with a time bound, and batches of output give what line-by-line `re` gives."""

from __future__ import annotations

import random
import re

import pytest

from goalloop.goal import patterns

PATTERNS = [r"^score:\s*(\S+)", r"(\d+) passed", r"loss=([0-9.]+)$", r"^a", r"b$", r"\s(\w+)\s", r"x[^y]*y",
            r"(?<!a)b(\d)", r"^(?!c)(\w)", r"\Aa", r"[0-9]+\Z"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_batched_matching_finds_the_same_last_line_as_matching_each_line(pattern: str) -> None:
    rng = random.Random(pattern)
    alphabet = ["a", "b", "c", "x", "y", " ", "1", "7", "score: 3", "loss=0.5", "9 passed", "\t"]
    plain = re.compile(pattern)
    bounded = patterns.compiled(pattern)
    for _ in range(300):
        lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(0, 40))]
        expected = next((m.group(0) for m in (plain.search(line) for line in reversed(lines)) if m), None)
        found = patterns.last_in_lines(bounded, lines)
        assert (found.group(0) if found else None) == expected, (pattern, lines)


def test_a_catastrophic_match_gives_up_instead_of_hanging() -> None:
    slow = patterns.compiled(r"(a|aa)+$")
    with pytest.raises(patterns.PatternTimeout, match="took more than"):
        patterns.last_in_lines(slow, ["a" * 5000 + "b"])


@pytest.mark.parametrize("pattern, piece", [(r"^(a+)+$", "(a+)+"), (r"(\d*)*x", r"(\d*)*"),
                                            (r"X = ((\d+)*)$", r"(\d+)*"), (r"(?:\s*\w+)*:", r"(?:\s*\w+)*")])
def test_a_repeat_inside_a_repeat_is_refused_and_named(pattern: str, piece: str) -> None:
    found = patterns.problem(pattern)
    assert found is not None and f"`{piece}`" in found[0], found


@pytest.mark.parametrize("pattern", [r"^score:\s*(\S+)", r"(\d+) passed", r"(a++)+", r"((?>a+))+", r"(\d{1,3},)*",
                                     r"^val_bpb:\s+([\d.]+)"])
def test_ordinary_and_possessive_patterns_pass(pattern: str) -> None:
    assert patterns.problem(pattern) is None
