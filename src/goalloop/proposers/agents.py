"""Claude Code, Codex and Aider as proposers: command proposers that know their CLI.

Each preset knows its CLI's non-interactive invocation, and keeps what the CLI needs and writes out of
the worktree:
  - the prompt goes on stdin (Claude Code, Codex) or by file (Aider's --message-file), never in argv, so a
    prompt of any size arrives whole (Linux refuses one argument over 128 KiB);
  - the agent may edit files and run the goal's check command, and nothing broader unless the goal says so
    (`allow:` for Claude Code, `sandbox:` for Codex; Aider runs no commands);
  - its state and history live in the run folder: CLAUDE_CONFIG_DIR and CODEX_HOME under
    runs/<run-id>/agents/, Aider's three history files in the attempt's folder;
  - the key variables it reads reach it by name (and only it: the check never sees them);
  - with `sandbox:` it runs inside it with the network (its model API), its install read-only and its
    state folder or history files read-write; Codex's own bubblewrap nests inside goalloop's, Aider runs
    with --no-git (the git data is read-only or hidden there);
  - what it spent is read from its own report (Claude Code's JSON `total_cost_usd` and `modelUsage`,
    Codex's `turn.completed` token counts, Aider's `Tokens: ... Cost: ...` lines) into the attempt's
    cost and tokens, so budget.usd and budget.tokens stop the run. Codex reports no dollars: its cost is
    unknown ("not tracked"), and `validate` says budget.usd cannot be enforced for it.
Claude Code is also given `--max-budget-usd`: what is left of budget.usd, shared among the round's slots.

A missing CLI or key is found before anything runs (`validate`, and `run` before the baseline): exit 2
with the fix. Verified against Claude Code 2.1.197, Codex 0.171.0 and aider 0.86.2.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goalloop.environment import without_secrets
from goalloop.errors import BudgetExhausted
from goalloop.goal import Goal
from goalloop.proposers.base import ProposalRequest
from goalloop.proposers.command import AttemptFiles, CommandProposer, Invocation, Reported, first_line

if TYPE_CHECKING:  # `validate` builds these proposers and runs nothing
    from goalloop.check import ProcessResult

OUTPUT_LIMIT = 4 << 20
"""How much of a CLI's stdout is read for its spend and description."""


@dataclass(frozen=True)
class Preset:
    """What goalloop knows about one agent CLI."""

    kind: str
    program: str
    """The executable, looked up on PATH unless the goal's `program:` says where it is."""
    keys: tuple[str, ...]
    """The variables it reads its key from; any one of them set is enough."""
    install: str
    """How a user installs it (the fix when it is missing)."""
    reports: frozenset[str]
    """What it reports of its spend: "usd", "tokens"."""
    network: bool = True
    """It needs the network (its model's API): a sandbox around it must let that through."""
    nests_sandbox: bool = False
    """It runs its own commands under bubblewrap (Codex on Linux): goalloop's sandbox must allow that."""


CLAUDE_CODE = Preset(
    "claude-code", "claude", ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"),
    "npm install -g @anthropic-ai/claude-code", frozenset({"usd", "tokens"}),
)
CODEX = Preset("codex", "codex", ("CODEX_API_KEY", "OPENAI_API_KEY"), "npm install -g @openai/codex",
               frozenset({"tokens"}), nests_sandbox=True)
AIDER = Preset(
    "aider", "aider",
    ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
     "GROQ_API_KEY", "MISTRAL_API_KEY", "XAI_API_KEY", "AZURE_API_KEY", "OLLAMA_API_KEY"),
    "python3 -m venv ~/.aider-venv && ~/.aider-venv/bin/pip install aider-chat (its own venv: its pins "
    "clash with most projects), then program: ~/.aider-venv/bin/aider", frozenset({"usd", "tokens"}),
)
PRESETS = {preset.kind: preset for preset in (CLAUDE_CODE, CODEX, AIDER)}

CLAUDE_CLOUD = {
    "CLAUDE_CODE_USE_BEDROCK": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                "AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE"),
    "CLAUDE_CODE_USE_VERTEX": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "CLAUDE_CODE_USE_FOUNDRY": ("ANTHROPIC_FOUNDRY_API_KEY",),
}
"""Claude Code's switches to a cloud provider, and the secret-looking credentials it then reads (passed to it
alone, like its keys)."""
AIDER_LOCAL_MODELS = ("ollama/", "ollama_chat/", "lm_studio/", "llamafile/")
"""Model prefixes that name a local server: Aider needs no key for them."""
CHECK_SCRIPT_HINT = "To run the goal's check command yourself, run exactly:"
"""Told to Claude Code (--append-system-prompt), followed by `sh <its check script>`."""
CAP_DIGITS = 4
"""Decimals of --max-budget-usd."""


def _switched_on(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class AgentProposer(CommandProposer):
    """A preset's command line, environment and spend; the rest is the command proposer's."""

    preset: Preset

    def __init__(self, config: Any, goal: Goal, environ: dict[str, str]) -> None:
        self.keys = tuple(config.keys) if config.keys else self.preset.keys
        passed = [*goal.env.pass_, *self.keys, *self.credentials({**environ, **config.env})]
        super().__init__(config, without_secrets(environ, passed), network=self.preset.network)
        self.goal = goal
        self.tracks = self.preset.reports
        self.nests_sandbox = self.preset.nests_sandbox
        self.untracked_hint = f"{self.preset.kind} reports {' and '.join(sorted(self.tracks)) or 'nothing'} of its spend"
        self.executable = self._find(goal)
        self._key_check(goal)

    # -- found before anything runs -----------------------------------------------------------------------
    def _find(self, goal: Goal) -> str:
        program = os.path.expanduser(self.config.program or self.preset.program)
        found = shutil.which(program, path=self.base_env.get("PATH"))
        if found is None:
            where = "not found on PATH" if os.sep not in program else "not an executable file"
            raise goal.error(("proposer", "program") if self.config.program else ("proposer", "kind"),
                             f"{self.preset.kind}: {program} is {where}",
                             fix=f"install it ({self.preset.install}), or set program: to its path")
        return found

    def credentials(self, environ: dict[str, str]) -> list[str]:
        """Variables besides its keys that it authenticates with in this environment (a cloud provider's)."""
        return []

    def keyless(self) -> bool:
        """Whether it needs none of its key variables here (a cloud provider's credentials, a local model)."""
        return False

    def _key_check(self, goal: Goal) -> None:
        if not self.keyless() and not any(self.base_env.get(name) for name in self.keys):
            names = " or ".join(self.keys)
            raise goal.error(("proposer", "keys") if self.config.keys else ("proposer", "kind"),
                             f"{self.preset.kind} needs an API key, and none of {names} is set",
                             fix=f"export {self.keys[0]}=... before goalloop starts (goalloop passes it to "
                             f"{self.preset.program} only, never to the check); or name the variable under keys:")

    # -- one proposal ---------------------------------------------------------------------------------------
    def state_dir(self, request: ProposalRequest) -> Path:
        """The CLI's own configuration and session folder: in the run folder, shared by its attempts."""
        path = request.run_dir / "agents" / self.preset.kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def invocation(self, request: ProposalRequest, files: AttemptFiles) -> Invocation:
        argv = [self.executable, *self.arguments(request, files), *self.config.args]
        stdin = "" if self.prompt_by_file else f" < {shlex.quote(str(files.prompt))}"
        return Invocation(shlex.join(argv) + stdin, {**self.state_env(request), **self.config.env})

    prompt_by_file = False

    def arguments(self, request: ProposalRequest, files: AttemptFiles) -> list[str]:
        raise NotImplementedError

    def state_env(self, request: ProposalRequest) -> dict[str, str]:
        return {}

    def output(self, files: AttemptFiles) -> str:
        from goalloop.check import read_capped

        return read_capped(files.stdout, OUTPUT_LIMIT)

    def sandbox_paths(self, request: ProposalRequest, files: AttemptFiles) -> tuple[list[Path], list[Path]]:
        """Sandboxed, the CLI still sees its own install (read-only, even under a hidden $HOME) and writes
        its state folder; the rest of the run folder stays hidden."""
        return [install_root(Path(self.executable))], self.state_paths(request)

    def state_paths(self, request: ProposalRequest) -> list[Path]:
        """What the CLI writes outside the worktree (made before it starts: the sandbox binds each)."""
        return [self.state_dir(request)]


class ClaudeCodeAgent(AgentProposer):
    """`claude -p`: prompt on stdin, JSON result on stdout; in dontAsk mode only the tools listed run (file
    tools, Bash for the check), anything else is denied without a question."""

    preset = CLAUDE_CODE

    def credentials(self, environ: dict[str, str]) -> list[str]:
        return [name for provider, names in CLAUDE_CLOUD.items() if _switched_on(environ.get(provider)) for name in names]

    def keyless(self) -> bool:
        """On Bedrock, Vertex or Foundry Claude Code authenticates with that cloud's credentials, not a key."""
        return any(_switched_on({**self.base_env, **self.config.env}.get(flag)) for flag in CLAUDE_CLOUD)

    def arguments(self, request: ProposalRequest, files: AttemptFiles) -> list[str]:
        check = " ".join(self.goal.check.run.split())
        script = shlex.join(["sh", str(self._check_script(request))])
        allowed = ["Read", "Glob", "Grep", "Edit", "Write", f"Bash({check})", f"Bash({check}:*)", f"Bash({script})",
                   *self.config.allow]
        argv = ["-p", "--output-format", "json", "--permission-mode", "dontAsk", "--allowedTools", *allowed,
                "--append-system-prompt", f"{CHECK_SCRIPT_HINT} {script}"]
        if self.config.model:
            argv += ["--model", self.config.model]
        cap = self._budget_left(request)
        if cap is not None:
            argv += ["--max-budget-usd", f"{cap:.{CAP_DIGITS}f}"]
        return argv

    def _check_script(self, request: ProposalRequest) -> Path:
        """The goal's check as a script in the state folder: one command Claude Code may run whatever the
        check looks like (its Bash rules match one line; a multi-line or compound check matches none)."""
        path = self.state_dir(request) / "check.sh"
        text = f"#!/bin/sh\n{self.goal.check.run.rstrip()}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            partial = path.with_name(f"check.sh.{os.getpid()}.{request.slot}")
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)
        return path

    def _budget_left(self, request: ProposalRequest) -> float | None:
        """This slot's share of what is left of budget.usd; refuses to start when nothing is."""
        if request.budget.usd is None:
            return None
        left = request.budget.usd - request.spend.usd
        if round(left / max(request.round_size, 1), CAP_DIGITS) <= 0:  # a cap of 0.0000 is no cap to give
            raise BudgetExhausted(f"dollar budget spent (${request.spend.usd:.2f} of ${request.budget.usd:.2f})",
                                  cost_usd=0.0, tokens=0)
        return left / max(request.round_size, 1)

    def state_env(self, request: ProposalRequest) -> dict[str, str]:
        return {
            "CLAUDE_CONFIG_DIR": str(self.state_dir(request)),
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            **({"ANTHROPIC_BASE_URL": self.config.base_url} if self.config.base_url else {}),
        }

    def _result(self, files: AttemptFiles) -> dict[str, Any]:
        for line in reversed(self.output(files).splitlines()):
            if line.startswith("{"):
                try:
                    found = json.loads(line)
                except ValueError:
                    continue
                if isinstance(found, dict) and found.get("type") == "result":
                    return found
        return {}

    def reported(self, files: AttemptFiles, result: ProcessResult) -> Reported:
        found = self._result(files)
        if not found:
            return Reported()
        usd = found.get("total_cost_usd")
        per_model = found.get("modelUsage") or {}
        counts = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        tokens = sum(int(usage.get(key) or 0) for usage in per_model.values() for key in counts)
        if not per_model:
            usage = found.get("usage") or {}
            tokens = sum(int(usage.get(key) or 0) for key in
                         ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
        return Reported(float(usd) if isinstance(usd, (int, float)) else None, tokens)

    def described(self, files: AttemptFiles) -> str:
        found = self._result(files)
        return first_line(str(found.get("result") or "")) if found else super().described(files)

    def _failure(self, files: AttemptFiles, result: ProcessResult) -> str | None:
        found = self._result(files)
        if found.get("is_error") and not result.timed_out:
            errors = "; ".join(str(e) for e in found.get("errors") or []) or str(found.get("result") or "")
            return f"claude exited with code {result.exit_code} ({found.get('subtype')}): {first_line(errors)}"
        return super()._failure(files, result)


class CodexAgent(AgentProposer):
    """`codex exec -`: prompt on stdin, JSON events on stdout, its own workspace-write sandbox."""

    preset = CODEX

    def arguments(self, request: ProposalRequest, files: AttemptFiles) -> list[str]:
        argv = ["exec", "--json", "--skip-git-repo-check", "--sandbox", self.config.sandbox]
        if self.config.model:
            argv += ["--model", self.config.model]
        if self.config.base_url:
            provider = "model_providers.goalloop"
            argv += ["-c", 'model_provider="goalloop"', "-c", f'{provider}.name="goalloop"',
                     "-c", f"{provider}.base_url={json.dumps(self.config.base_url)}",
                     "-c", f'{provider}.env_key="CODEX_API_KEY"', "-c", f'{provider}.wire_api="responses"']
        return [*argv, "-"]

    def invocation(self, request: ProposalRequest, files: AttemptFiles) -> Invocation:
        called = super().invocation(request, files)
        # set in the command itself, so that it holds inside goalloop's sandbox too (which sets TMPDIR=/tmp)
        return Invocation(f"TMPDIR={shlex.quote(called.env['TMPDIR'])} {called.command}", called.env)

    def state_env(self, request: ProposalRequest) -> dict[str, str]:
        home = self.state_dir(request)
        temp = home / "tmp"
        temp.mkdir(exist_ok=True)
        # Codex will not install its sandbox helper when CODEX_HOME is under $TMPDIR (/tmp by default),
        # and then every edit fails; a run folder under /tmp is common (CI), so its TMPDIR is its own.
        env = {"CODEX_HOME": str(home), "TMPDIR": str(temp)}
        if not self.base_env.get("CODEX_API_KEY") and self.base_env.get("OPENAI_API_KEY"):
            env["CODEX_API_KEY"] = self.base_env["OPENAI_API_KEY"]  # `codex exec` reads only CODEX_API_KEY
        return env

    def _events(self, files: AttemptFiles) -> list[dict[str, Any]]:
        events = []
        for line in self.output(files).splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return [e for e in events if isinstance(e, dict)]

    def reported(self, files: AttemptFiles, result: ProcessResult) -> Reported:
        turns = [e.get("usage") or {} for e in self._events(files) if e.get("type") == "turn.completed"]
        if not turns:
            return Reported()
        return Reported(None, sum(int(u.get("input_tokens") or 0) + int(u.get("output_tokens") or 0) for u in turns))

    def described(self, files: AttemptFiles) -> str:
        said = [str((e.get("item") or {}).get("text") or "") for e in self._events(files)
                if e.get("type") == "item.completed" and (e.get("item") or {}).get("type") == "agent_message"]
        return first_line(said[-1]) if said else super().described(files)

    def _failure(self, files: AttemptFiles, result: ProcessResult) -> str | None:
        failed = [e for e in self._events(files) if e.get("type") == "turn.failed"]
        if failed and not result.timed_out:
            message = str((failed[-1].get("error") or {}).get("message") or "")
            return f"codex exited with code {result.exit_code}: {first_line(message)}"
        return super()._failure(files, result)


AIDER_HISTORY = {"aider.input.history": "--input-history-file", "aider.chat.history.md": "--chat-history-file",
                 "aider.llm.history": "--llm-history-file"}
"""Aider's history files, kept in the attempt's folder, and the option naming each."""
AIDER_USAGE = re.compile(r"^Tokens: (?P<sent>[\d.]+k?) sent(?:, (?P<write>[\d.]+k?) cache write)?"
                         r"(?:, (?P<hit>[\d.]+k?) cache hit)?, (?P<received>[\d.]+k?) received\.", re.MULTILINE)
AIDER_COST = re.compile(r"Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.")
AIDER_FAILURES = re.compile(r"^(litellm\.\w+Error: .*|The API provider is not able to authenticate you.*)$", re.MULTILINE)


class AiderAgent(AgentProposer):
    """`aider --message-file`: one message, edits applied, no commits, history files in the attempt folder."""

    preset = AIDER
    prompt_by_file = True

    def keyless(self) -> bool:
        """A local model (ollama/..., or any base_url: a local server may take no key) needs none."""
        return bool(self.config.base_url) or (self.config.model or "").startswith(AIDER_LOCAL_MODELS)

    def arguments(self, request: ProposalRequest, files: AttemptFiles) -> list[str]:
        folder = request.attempt_dir
        argv = [
            "--message-file", str(files.prompt), "--yes-always", "--no-auto-commits", "--no-dirty-commits",
            "--no-gitignore", "--no-analytics", "--no-check-update", "--no-show-model-warnings",
            "--no-show-release-notes", "--no-pretty", "--no-fancy-input", "--no-detect-urls",
            "--no-restore-chat-history", "--map-tokens", "0",
            *(flag for name, option in AIDER_HISTORY.items() for flag in (option, str(folder / name))),
        ]
        if self.config.model:
            argv += ["--model", self.config.model]
        if self.config.base_url:
            argv += ["--openai-api-base", self.config.base_url]
        if request.sandbox is not None:  # the git data is read-only or hidden there; goalloop commits anyway
            argv.append("--no-git")
        return argv

    def state_paths(self, request: ProposalRequest) -> list[Path]:
        paths = [request.attempt_dir / name for name in AIDER_HISTORY]
        for path in paths:
            path.touch()
        return paths

    def state_env(self, request: ProposalRequest) -> dict[str, str]:
        return {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # its bundled price table: no download at each start

    def reported(self, files: AttemptFiles, result: ProcessResult) -> Reported:
        text = self.output(files)
        usages = list(AIDER_USAGE.finditer(text))
        costs = list(AIDER_COST.finditer(text))
        tokens = sum(_aider_count(m[key]) for m in usages for key in ("sent", "write", "hit", "received") if m[key])
        return Reported(float(costs[-1]["session"]) if costs else None, tokens if usages else None)

    def _failure(self, files: AttemptFiles, result: ProcessResult) -> str | None:
        said = AIDER_FAILURES.findall(self.output(files)) if not result.timed_out else []
        if said and not list(AIDER_USAGE.finditer(self.output(files))):
            return f"aider exited with code {result.exit_code}: {first_line(said[-1])}"
        return super()._failure(files, result)


AGENTS = {agent.preset.kind: agent for agent in (ClaudeCodeAgent, CodexAgent, AiderAgent)}


def _aider_count(text: str) -> int:
    """Aider prints counts as 950, 2.5k or 12k."""
    return round(float(text[:-1]) * 1000) if text.endswith("k") else int(float(text))


def install_root(executable: Path) -> Path:
    """The folder an agent CLI runs from: its virtualenv, its npm `node_modules` (Codex's launcher loads a
    platform package beside its own), or else the folder of the resolved program."""
    program = executable.resolve()
    for folder in program.parents:
        if (folder / "pyvenv.cfg").is_file() or folder.name == "node_modules":
            return folder
    return program.parent
