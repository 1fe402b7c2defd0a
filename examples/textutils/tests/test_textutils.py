import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textutils import slugify, top_words, wrap  # noqa: E402


def test_slugify_lowercases_and_joins_words():
    assert slugify("Hello World") == "hello-world"


def test_slugify_collapses_punctuation_runs():
    assert slugify("  Hello, World!  ") == "hello-world"


def test_wrap_keeps_lines_within_width():
    assert wrap("the quick brown fox jumps", 10) == ["the quick", "brown fox", "jumps"]


def test_wrap_fills_lines_exactly_to_width():
    assert wrap("aaaa bbbbb cc", 10) == ["aaaa bbbbb", "cc"]


def test_wrap_gives_a_long_word_its_own_line():
    assert wrap("a extraordinarily b", 5) == ["a", "extraordinarily", "b"]


def test_top_words_ignores_case():
    assert top_words("The cat and the hat", 1) == [("the", 2)]


def test_top_words_breaks_ties_alphabetically():
    assert top_words("pear apple fig pear apple", 3) == [("apple", 2), ("pear", 2), ("fig", 1)]
