"""goalloop: loop a proposer against an objective check until a goal is met or the budget is spent."""

__version__ = "0.1.0"
