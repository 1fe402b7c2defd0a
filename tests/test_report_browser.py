"""report.html in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium) for a run of 1,000
attempts, at 1400 px (a desktop) and 390 px (a phone): measured geometry, not markup. The test that
refreshes docs/report.png also keeps the screenshot a person looks at in the README."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from goalloop.ledger import AttemptRecord, RunMeta
from goalloop.report import write_report

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("GOALLOOP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def synthetic_run(folder: Path, attempts: int, seed: int = 7) -> Path:
    """A run folder like a real one: a minimize goal whose gains come fast, then rarely and small."""
    rng = random.Random(seed)
    subprocess.run(["git", "init", "-q", str(folder / "repo")], check=True)
    run_dir = folder / "runs" / "forecast-20261201-020000"
    (run_dir / "attempts").mkdir(parents=True)
    meta = RunMeta(run_id=run_dir.name, goal_name="forecast", goal_path=str(folder / "forecast.yaml"),
                   repo=str(folder / "repo"), base_commit="0" * 40, branch=f"goalloop/{run_dir.name}",
                   worktree=str(folder / "workspaces" / run_dir.name), created_at="2026-12-01T02:00:00+00:00",
                   metric_goal=True, direction="minimize", target=8.5)
    (run_dir / "run.json").write_text(json.dumps(asdict(meta)))
    (run_dir / "goal.yaml").write_text("check:\n  run: python3 score.py\n  metric: '^val_mae:\\s*(\\S+)'\n")
    best, events = 17.35, []
    for n in range(attempts + 1):
        if n == 0:
            verdict, metric = "baseline", best
        elif rng.random() < 0.04:
            verdict, metric = "crash", None
        elif rng.random() < 0.02:
            verdict, metric = "rejected", None
        else:
            metric = best * (1 + abs(rng.gauss(0.25, 0.3))) if rng.random() < 0.9 else best * 40
            if rng.random() < 8 / (n + 8):
                metric = best * (1 - rng.uniform(0.01, 0.2) * 40 / (n + 40))
            verdict = "keep" if metric < best else "discard"
            best = min(best, metric)
        record = AttemptRecord(iteration=n, verdict=verdict, metric=metric, cost_usd=None, seconds=1.2, elapsed=n * 3.0,
                               description="baseline" if n == 0 else f"alpha={rng.random():.5f} beta={rng.random():.5f} "
                               "gamma: a longer description of what this attempt tried and why it might help",
                               reason="check exited with code 1" if verdict == "crash" else
                               "changed score.py (protected)" if verdict == "rejected" else "", kept_commit="0" * 40)
        events.append({"event": "attempt", **asdict(record)})
    events.append({"event": "run_stopped", "exit_code": 1, "state": "budget spent",
                   "reason": f"iteration budget spent ({attempts} of {attempts})"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_dir


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.ci/run installs it)")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def report_1000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = synthetic_run(tmp_path_factory.mktemp("big"), 1000)
    return write_report(run_dir).html


GEOMETRY = """() => {
  const box = el => { const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height,
    right: r.right, bottom: r.bottom}; };
  const shown = [...document.querySelectorAll('.figure')].filter(f => getComputedStyle(f).display !== 'none');
  const figure = shown[0], svg = figure.querySelector('svg');
  const inside = [...svg.querySelectorAll('text, circle, path, line, polygon, rect')].map(box)
    .filter(r => r.w > 0 || r.h > 0);
  const fbox = box(figure);
  const outside = inside.filter(r => r.x < fbox.x - 1 || r.right > fbox.right + 1 || r.y < fbox.y - 1
    || r.bottom > fbox.bottom + 1).length;
  const texts = [...svg.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) *
    svg.getBoundingClientRect().width / svg.viewBox.baseVal.width);
  const row = document.querySelector('#attempt-7');
  const desc = row.querySelector('td.desc');
  return {width: document.documentElement.clientWidth, scrollWidth: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight, figures: shown.length, figure: fbox, outside,
    smallestText: Math.min(...texts), desc: box(desc), row: box(row), table: box(document.querySelector('.attempts'))};
}"""


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 390])
def test_the_report_of_1000_attempts_fits_the_screen(browser, report_1000: Path, width: int) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(report_1000.as_uri())
    g = page.evaluate(GEOMETRY)
    page.close()
    assert g["scrollWidth"] <= g["width"], f"the page scrolls sideways at {width}px: {g}"
    assert g["height"] < 6 * 900, f"a 1,000-attempt page must not be {g['height']}px tall"
    assert g["figures"] == 1, "one chart for the screen size"
    assert g["outside"] == 0, "every mark of the chart is inside its box"
    assert g["figure"]["right"] <= g["width"] and g["figure"]["w"] > 0.8 * min(width, 1080) - 60
    assert g["smallestText"] >= 8.5, f"the chart's text is readable at {width}px ({g['smallestText']:.1f}px)"
    assert g["desc"]["w"] > 0.6 * min(width, 1000), "the description is not squeezed to a sliver"
    assert g["table"]["h"] <= 0.8 * 900, "the attempts scroll in their own box"


@pytest.mark.slow
def test_the_screenshot_in_docs_is_of_this_report(browser, report_1000: Path) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(report_1000.as_uri())
    figure = page.locator(".figure.wide")
    shot = report_1000.parent / "report.png"
    figure.screenshot(path=str(shot))
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.goto(report_1000.as_uri())
    phone.screenshot(path=str(report_1000.parent / "phone.png"))
    page.close()
    phone.close()
    assert shot.stat().st_size > 20_000
    if os.environ.get("GOALLOOP_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, REPO_ROOT / "docs" / "report.png")
        shutil.copy(report_1000.parent / "phone.png", REPO_ROOT / "docs" / "report-phone.png")


def test_a_cost_nobody_reported_reads_not_tracked(report_1000: Path) -> None:
    html = report_1000.read_text(encoding="utf-8")
    markdown = report_1000.with_name("report.md").read_text(encoding="utf-8")
    assert '<div class="v">not tracked</div>' in html and "| cost | not tracked |" in markdown
    assert "$0.00" not in html and "0 tokens" not in markdown
