"""The goal file; see model.py."""

from goalloop.goal.model import *  # noqa: F403
from goalloop.goal.model import DEFAULT_CLAUDE_MODEL  # noqa: F401
