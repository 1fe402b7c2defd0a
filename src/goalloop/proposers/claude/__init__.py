"""The Claude proposer (see agent.py)."""

from goalloop.proposers.claude.agent import ClaudeProposer, PriceTable

__all__ = ["ClaudeProposer", "PriceTable"]
