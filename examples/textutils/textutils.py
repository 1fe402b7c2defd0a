"""Small text helpers: URL slugs, greedy word wrapping, word counts.

goals/fix-tests.yaml asks a proposer to make tests/test_textutils.py pass: three of its tests fail.
"""

import re
from collections import Counter


def slugify(title: str) -> str:
    """'Hello, World!' -> 'hello-world': lowercase words joined by single dashes."""
    slug = re.sub(r"[^a-z0-9]", "-", title.lower())
    return slug.strip("-")


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, breaking between words (a longer word gets a line of its own)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) >= width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def top_words(text: str, n: int) -> list[tuple[str, int]]:
    """The `n` most frequent words, ignoring case; ties in alphabetical order."""
    counts = Counter(re.findall(r"[a-z']+", text.lower()))
    return sorted(counts.items(), key=lambda item: -item[1])[:n]
