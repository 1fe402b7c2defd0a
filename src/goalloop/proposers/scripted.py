"""The scripted proposer: applies prepared changes in order. For tests, demos and dry runs.

Step `i` is used for iteration `i` (1-based), so a resumed run continues with the right step.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from goalloop.goal import ScriptedProposer as ScriptedConfig
from goalloop.goal import ScriptedStep
from goalloop.ledger import AttemptRecord
from goalloop.proposers.base import Proposal, ProposalRequest


class ScriptedProposer:
    def __init__(self, config: ScriptedConfig) -> None:
        self.config = config

    def step_for(self, iteration: int) -> ScriptedStep | None:
        index = iteration - 1
        if self.config.cycle:
            index %= len(self.config.steps)
        return self.config.steps[index] if index < len(self.config.steps) else None

    def propose(self, request: ProposalRequest) -> Proposal:
        step = self.step_for(request.iteration)
        if step is None:
            return Proposal(failed=f"the script has only {len(self.config.steps)} steps", cost_usd=0.0, tokens=0)
        if step.sleep:
            time.sleep(step.sleep)
        description = step.description or f"scripted step {request.iteration}"
        if step.fail is not None:
            return Proposal(description=description, failed=step.fail, cost_usd=step.cost_usd, tokens=0)
        for rel_path, content in step.files.items():
            target = _inside(request.worktree, rel_path)
            if target is None:
                return Proposal(description=description, failed=f"{rel_path} is outside the worktree", cost_usd=step.cost_usd, tokens=0)
            if content is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
        if step.patch:
            applied = subprocess.run(
                ["git", "apply", "--whitespace=nowarn", "-"],
                cwd=request.worktree,
                input=step.patch.encode(),
                capture_output=True,
            )
            if applied.returncode != 0:
                error = applied.stderr.decode(errors="replace").strip()
                return Proposal(description=description, failed=f"patch did not apply: {error}", cost_usd=step.cost_usd, tokens=0)
        return Proposal(description=description, cost_usd=step.cost_usd, tokens=0)

    def observe(self, record: AttemptRecord) -> None:
        pass


def _inside(root: Path, rel_path: str) -> Path | None:
    """`root/rel_path` if it resolves inside `root` (no `..`, absolute paths or symlinks out)."""
    target = (root / rel_path).resolve()
    return target if target.is_relative_to(root.resolve()) and target != root.resolve() else None
