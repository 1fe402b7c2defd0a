"""The `executor:` key, without a cluster: what a wrong one says, what `validate` says, Ray missing.

These run whether or not Ray is installed; the runs on a real cluster are in test_ray_executor.py.
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_repo, run_cli, write_goal
from test_core_loop import run_goal, scripted, step

SCORE_PY = "import knob\nprint(f'score: {knob.X}')\n"


def _knob_steps(values: list[int]) -> list[dict]:
    return [step(f"set X to {v}", {"knob.py": f"X = {v}\n"}) for v in values]


def test_ray_not_installed_is_exit_3_saying_what_to_install(tmp_path: Path) -> None:
    hidden = tmp_path / "no-ray"
    hidden.mkdir()
    (hidden / "ray.py").write_text('raise ModuleNotFoundError("No module named \'ray\'", name="ray")\n')
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    run = run_goal(tmp_path, repo, scripted(_knob_steps([2]), executor={"kind": "ray"}),
                   env={"PYTHONPATH": str(hidden)})
    assert run.exit_code == 3, run.cli.output
    assert "executor.kind is ray, but Ray is not installed" in run.cli.stderr
    assert "fix: pip install 'goalloop[ray]'" in run.cli.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_validate_says_where_the_checks_will_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    goal = write_goal(tmp_path / "goal.yaml", {"repo": str(repo), **scripted(_knob_steps([2]), executor={
        "kind": "ray", "address": "ray://head:10001", "num_gpus": 1, "resources": {"imagenet": 1}})})
    done = run_cli("validate", str(goal), cwd=tmp_path)
    assert done.exit_code == 0, done.output
    assert "checks     on the Ray cluster at ray://head:10001, each asking for 1 CPU, 1 GPU, 1 imagenet" in done.stdout


def test_ray_keys_without_kind_ray_are_a_goal_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"knob.py": "X = 1\n", "score.py": SCORE_PY})
    run = run_goal(tmp_path, repo, scripted(_knob_steps([2]), executor={"address": "auto", "num_gpus": 1}))
    assert run.exit_code == 2, run.cli.output
    assert "executor.address: address, num_gpus only apply to kind: ray" in run.cli.stderr
    assert "fix: add kind: ray" in run.cli.stderr
