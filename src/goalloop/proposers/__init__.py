"""Proposers: whatever produces a change in the worktree. See base.py for the protocol."""
