"""The Claude proposer: one attempt is one bounded tool-use conversation with Claude through the Messages API.

Claude is given three client tools, all run here, inside the attempt's worktree:
  - `str_replace_based_edit_tool` (Anthropic's text editor, `text_editor_20250728`): view, create,
    str_replace, insert. It refuses, with an `is_error` tool result the model can correct, any path that
    resolves outside the worktree (`..`, absolute paths elsewhere, symlinks out), the holdout check's files
    (not even listed), any write under `.git`,
    and any write the goal forbids (a protected path, or one outside `editable`). Viewing a protected
    file is allowed: reading the tests is how a model learns what passes them.
  - `bash` (Anthropic's `bash_20250124`), unless `bash: false`: each command runs in a fresh /bin/sh in
    the worktree, in its own process group, killed whole at `bash_timeout`, with its output capped and
    an environment without secrets (variables whose names contain one of `secret_patterns`), plus the
    variables goalloop sets for anything run in the worktree (`ProposalRequest.env`). It is NOT a
    sandbox: a command can read and write anything the user can. Changes it makes to protected files are
    caught afterwards, when the loop rejects the attempt.
  - `finish`, goalloop's own: ends the attempt with a one-line description (the ledger's description) and
    optionally a lesson, appended to `run_dir/notes.md` and shown in every later prompt.

Prompt caching. The request is laid out so that the part that never changes comes first: the tools and the
system prompt (a breakpoint: the same for every attempt of every run with this config), then the first user
block, `Prompt.stable` (a breakpoint: the same while the context files do not change). The part that changes
each attempt (the notes, then `Prompt.recent`) follows. Within an attempt the latest user message and the
one before it carry breakpoints too, so each turn reads the previous turn's prefix: the 4 breakpoints the API
allows.

Cost and budgets. Every reply's `usage` is priced from prices.json (a dated table, USD per million tokens).
A model missing from it is warned about and its cost is None (the dollar budget cannot be enforced for it).
Before every call the proposer checks that the run's spend, plus this attempt's, plus a worst case for the
call (its input priced as a cache write, all of `max_tokens` as output) stays within the token and dollar
budgets; otherwise it raises BudgetExhausted with what the attempt spent. With `parallel: N` the N
conversations of a round run at once (propose is thread-safe): each also counts what the round's other
conversations have spent so far.

Faults. The SDK retries a single 429/5xx/529 or dropped connection itself. Beyond that the API is treated
as down: the call is retried with exponential backoff (first wait `$GOALLOOP_OUTAGE_BACKOFF` seconds,
default 5, doubling to 5 minutes) for up to `outage_wait`, each wait logged to stderr and to the
transcript; then InfrastructureError (exit 3, the run is resumable). 400/401/403/404 raise
InfrastructureError at once, saying what to fix. A reply that cannot be read, a refusal, or a reply
without tool use (when nothing was changed) is a failed Proposal; running out of `max_turns` returns what
was changed, with a description that says so. The transcript of each attempt is `attempts/NNNN/claude.jsonl`.

Not covered: streaming (so `max_tokens` is capped at what the SDK allows without it), the Batch API,
1-hour cache writes, Haiku 5.5's prompt-length price tiers, and server tools (web search, code execution).
"""

from goalloop.proposers.claude.agent import ClaudeProposer, with_cache_breakpoints
from goalloop.proposers.claude.pricing import ModelPrice, PriceTable, Rates, TokenTally
from goalloop.proposers.claude.tools import ToolOutcome, ToolRefused, Workbench, environment_without_secrets
from goalloop.proposers.claude.transcript import Transcript, read_notes

__all__ = [
    "ClaudeProposer",
    "ModelPrice",
    "PriceTable",
    "Rates",
    "TokenTally",
    "ToolOutcome",
    "ToolRefused",
    "Transcript",
    "Workbench",
    "environment_without_secrets",
    "read_notes",
    "with_cache_breakpoints",
]
