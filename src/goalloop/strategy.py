"""Which kept state each slot proposes from: the selection rules of `search.strategy`, one registry.

`greedy` (the default) always proposes from the run's latest kept state, as goalloop always has. The others
pick a parent from the frontier, the kept nodes of the tree that are still open (see frontier.py), by
their metric:

    top-k           uniformly among the k best open nodes (k: 1 is best-first with backtracking)
    epsilon-greedy  the best open node, or with probability epsilon any open node
    softmax         any open node, with weight exp(score / temperature), the score being the metric
                    scaled over the frontier to 0 (worst) .. 1 (best)

A round of `parallel: N` picks N parents one after another without putting one back, as long as the
frontier has nodes left, so slots explore different branches; then parents repeat. Picks draw from one
seeded random generator (`search.seed`), so a run repeats given the same verdicts.

Each strategy is one entry of STRATEGIES (its parameters, their defaults, what it does) and one function:
the goal's validator, the picker and the documentation all read the same table.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Scored(Protocol):
    """What a strategy needs of a node: its metric, made "higher is better", and its age."""

    @property
    def score(self) -> float: ...

    @property
    def iteration(self) -> int: ...


Pick = Callable[[Sequence[Scored], dict[str, float], random.Random], Scored]
"""(open nodes, the strategy's parameters, the run's random generator) -> the parent."""


@dataclass(frozen=True)
class Strategy:
    name: str
    pick: Pick | None
    """None for greedy, which is not a pick among nodes but the latest kept state."""
    params: dict[str, float] = field(default_factory=dict)
    """The parameters it reads and their defaults."""
    description: str = ""


def _best(nodes: Sequence[Scored]) -> Scored:
    """The best node; the earliest among equals."""
    return max(nodes, key=lambda n: (n.score, -n.iteration))


def _ranked(nodes: Sequence[Scored]) -> list[Scored]:
    return sorted(nodes, key=lambda n: (-n.score, n.iteration))


def top_k(nodes: Sequence[Scored], params: dict[str, float], rng: random.Random) -> Scored:
    return rng.choice(_ranked(nodes)[: max(1, int(params["k"]))])


def epsilon_greedy(nodes: Sequence[Scored], params: dict[str, float], rng: random.Random) -> Scored:
    return rng.choice(list(nodes)) if rng.random() < params["epsilon"] else _best(nodes)


def softmax(nodes: Sequence[Scored], params: dict[str, float], rng: random.Random) -> Scored:
    scores = [n.score for n in nodes]
    low, high = min(scores), max(scores)
    scaled = [(s - low) / (high - low) if high > low else 1.0 for s in scores]
    temperature = params["temperature"]
    weights = [math.exp((s - 1.0) / temperature) for s in scaled]
    return rng.choices(list(nodes), weights=weights)[0]


STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (
        Strategy("greedy", None, {}, "propose from the latest kept state, as goalloop always has"),
        Strategy("top-k", top_k, {"k": 3}, "a parent drawn uniformly among the k best open nodes"),
        Strategy("epsilon-greedy", epsilon_greedy, {"epsilon": 0.1},
                 "the best open node, or with probability epsilon any open node"),
        Strategy("softmax", softmax, {"temperature": 0.1},
                 "any open node, weighted by exp(score / temperature), scores scaled to 0..1 over the frontier"),
    )
}


def pick_parents(strategy: Strategy, params: dict[str, float], nodes: Sequence[Scored], count: int,
                 rng: random.Random) -> list[Scored]:
    """`count` parents for one round: drawn without putting back while nodes are left, then again."""
    assert strategy.pick is not None, "greedy picks no parent"
    picked: list[Scored] = []
    left = list(nodes)
    while len(picked) < count:
        if not left:
            left = list(nodes)
        choice = strategy.pick(left, params, rng)
        picked.append(choice)
        left.remove(choice)
    return picked
