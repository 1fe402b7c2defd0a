"""The goal file: pydantic models, YAML loading with file:line errors, and the JSON schema.

model.py holds the goal's models and the schema, proposers.py one model per proposer kind; values.py how durations, money and deadlines are written;
load.py reads the YAML and its line map; mistakes.py turns YAML and validation errors into file:line + fix.
"""

from goalloop.goal.load import load_goal, parse_goal
from goalloop.goal.model import (
    SCHEMA_URL,
    Budget,
    Check,
    Environment,
    Executor,
    Goal,
    Holdout,
    Keep,
    Sandbox,
    Target,
    goal_json_schema,
)
from goalloop.goal.proposers import (
    DEFAULT_CLAUDE_MODEL,
    AgentCLI,
    AiderProposer,
    ClaudeCodeProposer,
    ClaudeProposer,
    CodexProposer,
    CommandProposer,
    ProposerConfig,
    ScriptedProposer,
    ScriptedStep,
    SearchParam,
    SearchProposer,
)
from goalloop.goal.strict import StrictModel
from goalloop.goal.values import (
    Duration,
    Mistake,
    Money,
    format_duration,
    format_seconds,
    parse_duration,
    parse_money,
    resolve_deadline,
)

__all__ = [
    "DEFAULT_CLAUDE_MODEL",
    "SCHEMA_URL",
    "Budget",
    "Check",
    "AgentCLI",
    "AiderProposer",
    "ClaudeCodeProposer",
    "ClaudeProposer",
    "CodexProposer",
    "CommandProposer",
    "Duration",
    "Environment",
    "Executor",
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
    "format_seconds",
    "goal_json_schema",
    "load_goal",
    "parse_duration",
    "parse_goal",
    "parse_money",
    "resolve_deadline",
]
