"""What Claude costs: prices.json (USD per million tokens, dated, with aliases and retirements) and the
tokens an attempt used, as the API reported them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Rates:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, tally: TokenTally) -> float:
        return (
            tally.input * self.input
            + tally.output * self.output
            + tally.cache_write * self.cache_write
            + tally.cache_read * self.cache_read
        ) / 1_000_000

    def worst_case(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * max(self.input, self.cache_write) + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    rates: list[tuple[date | None, Rates]]
    retires: date | None = None
    replacement: str | None = None

    def rates_on(self, day: date) -> Rates | None:
        in_force = [(since, rates) for since, rates in self.rates if since is None or since <= day]
        return max(in_force, key=lambda pair: pair[0] or date.min)[1] if in_force else None


class PriceTable:
    """prices.json: per-model rates, dated, with aliases (snapshot ids) and retirement dates."""

    def __init__(self, models: dict[str, ModelPrice], aliases: dict[str, str], checked: str) -> None:
        self.models, self.aliases, self.checked = models, aliases, checked

    @classmethod
    def load(cls) -> PriceTable:
        raw = json.loads(
            resources.files("goalloop.proposers.claude").joinpath("prices.json").read_text(encoding="utf-8")
        )
        models, aliases = {}, {}
        for name, entry in raw["models"].items():
            models[name] = ModelPrice(
                rates=[
                    (_day(period["since"]),
                     Rates(period["input"], period["output"], period["cache_write"], period["cache_read"]))
                    for period in entry["rates"]
                ],
                retires=_day(entry.get("retires")),
                replacement=entry.get("replacement"),
            )
            aliases.update({alias: name for alias in entry.get("aliases", [])})
        return cls(models, aliases, raw["checked"])

    def lookup(self, model: str) -> ModelPrice | None:
        return self.models.get(self.aliases.get(model, model))

    def rates(self, model: str, day: date) -> Rates | None:
        price = self.lookup(model)
        return price.rates_on(day) if price else None

    def current_models(self, today: date) -> list[str]:
        return [name for name, price in self.models.items() if price.retires is None or price.retires > today]


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _today() -> date:
    return datetime.now(timezone.utc).date()


@dataclass
class TokenTally:
    """Tokens an attempt used, by kind, as the API reported them."""

    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0

    def add(self, usage: Any) -> None:
        self.input += getattr(usage, "input_tokens", 0) or 0
        self.output += getattr(usage, "output_tokens", 0) or 0
        self.cache_write += getattr(usage, "cache_creation_input_tokens", 0) or 0
        self.cache_read += getattr(usage, "cache_read_input_tokens", 0) or 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read


def _usage_fields(reply: Any) -> dict[str, int]:
    usage = reply.usage
    names = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {name: getattr(usage, name, 0) or 0 for name in names}


def _dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.4f}"
