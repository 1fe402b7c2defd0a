"""The goal file: pydantic models, YAML loading with file:line errors, and the JSON schema.

model.py holds the models and the schema; values.py how durations, money and deadlines are written;
load.py reads the YAML and its line map; mistakes.py turns YAML and validation errors into file:line + fix.
"""

from goalloop.goal.load import load_goal, parse_goal
from goalloop.goal.model import (
    DEFAULT_CLAUDE_MODEL,
    SCHEMA_URL,
    Budget,
    Check,
    ClaudeProposer,
    CommandProposer,
    Environment,
    Goal,
    Holdout,
    Keep,
    ProposerConfig,
    Sandbox,
    ScriptedProposer,
    ScriptedStep,
    SearchParam,
    SearchProposer,
    StrictModel,
    Target,
    goal_json_schema,
)
from goalloop.goal.values import (
    Duration,
    Mistake,
    Money,
    format_duration,
    parse_duration,
    parse_money,
    resolve_deadline,
)

__all__ = [
    "DEFAULT_CLAUDE_MODEL",
    "SCHEMA_URL",
    "Budget",
    "Check",
    "ClaudeProposer",
    "CommandProposer",
    "Duration",
    "Environment",
    "Goal",
    "Holdout",
    "Keep",
    "Mistake",
    "Money",
    "ProposerConfig",
    "Sandbox",
    "ScriptedProposer",
    "ScriptedStep",
    "SearchParam",
    "SearchProposer",
    "StrictModel",
    "Target",
    "format_duration",
    "goal_json_schema",
    "load_goal",
    "parse_duration",
    "parse_goal",
    "parse_money",
    "resolve_deadline",
]
