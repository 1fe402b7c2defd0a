"""report.py: the markdown and the self-contained HTML page of a run recorded by the real CLI.

Each test attacks one property: the markdown rows are the results.tsv rows; the chart has one point per
attempt; the page loads nothing from elsewhere; what a proposer wrote cannot run as HTML; a huge diff is
cut; headless Chromium really draws the chart.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SCORE_PY, make_repo, only_run_dir, results_rows, run_cli, write_goal

from goalloop.ledger import AttemptRecord, RunMeta, RunRecord, read_run
from goalloop.report import (
    CHROMIUM_PATHS,
    COLORS,
    DIFF_CAP,
    MetricChart,
    chromium_command,
    markdown_summary,
    render_chart_svg,
    render_html,
    write_report,
)

CHROMIUM = "/usr/bin/chromium"
EVIL = '<script>document.title="pwned"</script><img src=x onerror="alert(1)"> | `x` *b* & [l](u)'
EVIL_FILE = 'X = 2.5\n# </pre></details><script>alert("diff")</script>\n'
BIG = "".join(f"line {i} of a large generated file\n" for i in range(10_000))  # ~330 KB


def _record_run(base: Path, files: dict[str, str], goal: dict) -> Path:
    repo = make_repo(base / "proj", files)
    goal_file = write_goal(base / "goal.yaml", {"repo": str(repo), **goal})
    result = run_cli("run", str(goal_file), "--home", str(base / "home"), cwd=base)
    assert result.exit_code in (0, 1), result.output
    return only_run_dir(base / "home")


@pytest.fixture(scope="module")
def metric_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metric run with every verdict: keeps, discards, a rejected cheat, an empty step, two crashes."""
    steps = [
        {"description": "raise X to 2", "files": {"knob.py": "X = 2\n"}, "cost_usd": 0.012},
        {"description": EVIL, "files": {"knob.py": EVIL_FILE}, "cost_usd": 0.02},
        {"description": "cheat: print a fixed score", "files": {"score.py": "print('score: 99')\n"}},
        {"description": "nothing at all"},
        {"description": "break the knob", "files": {"knob.py": "X = (\n"}},
        {"description": "add a large data file", "files": {"big.txt": BIG}},
        {"description": "raise X to 3.25", "files": {"knob.py": "X = 3.25\n"}, "cost_usd": 0.03},
        {"description": "lower X", "files": {"knob.py": "X = 1.5\n"}},
        {"description": "the proposer fails", "fail": "API error"},
        {"description": "raise X to 5", "files": {"knob.py": "X = 5\n"}},
    ]
    goal = {
        "name": "report-demo",
        "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "target": {"value": 5},
        "budget": {"iterations": len(steps)},
        "proposer": {"kind": "scripted", "steps": steps},
    }
    run_dir = _record_run(tmp_path_factory.mktemp("metric"), {"knob.py": "X = 1\n", "score.py": SCORE_PY}, goal)
    paths = write_report(run_dir)
    assert (paths.markdown, paths.html, paths.png) == (run_dir / "report.md", run_dir / "report.html", None)
    return run_dir


@pytest.fixture(scope="module")
def pass_fail_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    steps = [
        {"description": "set X to 2", "files": {"knob.py": "X = 2\n"}},
        {"description": "delete the test", "files": {"test_knob.py": None}},
        {"description": "set X to 3", "files": {"knob.py": "X = 3\n"}},
    ]
    goal = {
        "name": "report-tests",
        "check": {"run": "python3 test_knob.py"},
        "budget": {"iterations": 3},
        "proposer": {"kind": "scripted", "steps": steps},
    }
    files = {"knob.py": "X = 1\n", "test_knob.py": "import knob\nassert knob.X == 3, knob.X\n"}
    run_dir = _record_run(tmp_path_factory.mktemp("passfail"), files, goal)
    write_report(run_dir)
    return run_dir


# -- markdown ---------------------------------------------------------------------------------------------
def _markdown_table(text: str, after: str) -> tuple[list[str], list[list[str]]]:
    lines = text[text.index(after):].splitlines()
    table = [line for line in lines if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return cells[0], cells[2:]


def test_markdown_rows_are_the_results_tsv_rows(metric_run: Path) -> None:
    header, rows = _markdown_table((metric_run / "report.md").read_text(encoding="utf-8"), "## Attempts")
    expected = results_rows(metric_run)
    assert len(rows) == len(expected) == 11
    assert header == ["#", "verdict", "result", "description"], "four columns fit GitHub's content column"
    assert [row[:2] for row in rows] == [[tsv["iteration"], tsv["verdict"]] for tsv in expected]
    checked = [(row[2], tsv["metric"]) for row, tsv in zip(rows, expected) if tsv["verdict"] in ("baseline", "keep", "discard")]
    assert checked and all(shown == metric for shown, metric in checked)
    assert {row[2] for row, tsv in zip(rows, expected) if tsv["verdict"] == "rejected"} == {"-"}
    plain = [(row[3], tsv["description"]) for row, tsv in zip(rows, expected) if not re.search(r"[\\`*_\[\]|~<&]", tsv["description"])]
    assert len(plain) > 5 and all(shown.startswith(description) for shown, description in plain)
    assert {tsv["verdict"] for tsv in expected} == {"baseline", "keep", "discard", "crash", "rejected"}
    text = (metric_run / "report.md").read_text(encoding="utf-8")
    assert "time, cost, added lines, every measurement and its diff (with its commit) are in report.html" in text


def test_markdown_summary_has_the_totals(metric_run: Path) -> None:
    record = read_run(metric_run)
    summary = markdown_summary(record)
    tsv = results_rows(metric_run)
    keeps = sum(1 for row in tsv if row["verdict"] == "keep")
    assert f"| attempts | {len(tsv) - 1}: {keeps} keep," in summary
    assert f"| keep rate | {keeps / (len(tsv) - 1):.0%} |" in summary
    assert "| best | 5 at attempt 10; baseline 1, +4 (+400%) |" in summary
    assert f"| cost | ${record.cost_usd:.2f} |" in summary, "no tokens reported: none shown, never 0 tokens"
    assert f"git -C {record.meta.repo} diff {record.meta.base_commit[:12]} {record.meta.branch}" in summary
    assert summary.split("\n", 2)[2] in (metric_run / "report.md").read_text(encoding="utf-8"), "report.md starts with it"


def test_markdown_keeps_what_a_proposer_wrote_inert(metric_run: Path) -> None:
    text = (metric_run / "report.md").read_text(encoding="utf-8")
    assert "<script" not in text and "<img" not in text
    _, rows = _markdown_table(text, "## Attempts")
    assert len(rows[2]) == 4, "a | in a description must not open a new cell"
    assert rows[2][3].startswith("&lt;script>")


# -- HTML -------------------------------------------------------------------------------------------------
class _Page(HTMLParser):
    """The chart's points (tag, attributes, whether a <title> follows), every tag, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[str, dict[str, str | None], bool]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.in_svg = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if self.points and self.points[-1][2] is None:
            self.points[-1] = (*self.points[-1][:2], tag == "title")
        self.tags.append((tag, attributes))
        self.in_svg += tag == "svg"
        if self.in_svg and "data-iteration" in attributes:
            self.points.append((tag, attributes, None))

    def handle_endtag(self, tag: str) -> None:
        self.in_svg -= tag == "svg"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(run_dir: Path) -> tuple[_Page, str]:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    return page, html


def test_chart_has_one_point_per_attempt_with_a_tooltip(metric_run: Path) -> None:
    page, _ = _page(metric_run)
    tsv = results_rows(metric_run)
    assert [p[1]["data-iteration"] for p in sorted(page.points, key=lambda p: int(p[1]["data-iteration"]))] == [
        row["iteration"] for row in tsv
    ]
    assert all(has_title for _, _, has_title in page.points)
    kinds = {p[1]["data-iteration"]: (p[0], p[1]["class"]) for p in page.points}
    for row in tsv:
        tag, css = kinds[row["iteration"]]
        assert css == f"point {row['verdict']}"
        if row["verdict"] == "crash":
            assert tag == "path", "a crash has no metric: it is a cross on the bottom lane"
        elif row["verdict"] == "rejected":
            assert tag == "polygon", "a rejection is a triangle on the top lane"
        else:
            assert tag == "circle"
    html = (metric_run / "report.html").read_text(encoding="utf-8")
    assert 'class="best"' in html and 'class="target"' in html and "baseline 1" in html


def test_page_loads_nothing_from_elsewhere(metric_run: Path) -> None:
    page, html = _page(metric_run)
    for tag, attributes in page.tags:
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
            value = (attributes.get(name) or "").strip().lower()
            assert not re.match(r"(https?:)?//", value), (tag, name, value)
            if tag != "a" or name != "href":
                assert not value, f"<{tag} {name}=...> loads something"
        if tag == "a":
            assert (attributes.get("href") or "#").startswith("#"), attributes
    assert not any(tag in ("script", "link", "iframe", "object", "embed", "img") for tag, _ in page.tags)
    assert "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html


def test_page_escapes_what_a_proposer_wrote(metric_run: Path) -> None:
    page, html = _page(metric_run)
    assert "<script" not in html and "<img" not in html
    assert not {"script", "img"} & {tag for tag, _ in page.tags}
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    assert EVIL in "".join(page.text), "the description reads as text, exactly"
    assert '# </pre></details><script>alert("diff")</script>' in "".join(page.text)
    assert [tag for tag, _ in page.tags].count("details") == 8 + 1, "one diff per attempt that changed a file, and the net diff"


def test_a_huge_diff_is_cut_with_a_note(metric_run: Path) -> None:
    html = (metric_run / "report.html").read_text(encoding="utf-8")
    size = (metric_run / "attempts" / "0006" / "diff.patch").stat().st_size
    assert size > DIFF_CAP
    assert f"showing the first {DIFF_CAP:,} of {size:,} bytes" in html
    assert "line 9999 of a large" not in html and "line 10 of a large" in html
    assert len(html.encode()) < 2 * DIFF_CAP, "the cut diff, its markup and the rest of the page"


def test_pass_fail_goal_gets_a_strip(pass_fail_run: Path) -> None:
    page, _ = _page(pass_fail_run)
    tsv = results_rows(pass_fail_run)
    assert [p[1]["data-iteration"] for p in page.points] == [row["iteration"] for row in tsv]
    assert {p[0] for p in page.points} == {"rect"}
    header, rows = _markdown_table((pass_fail_run / "report.md").read_text(encoding="utf-8"), "## Attempts")
    assert header == ["#", "verdict", "result", "description"]
    assert [row[1] for row in rows] == ["baseline", "discard", "rejected", "keep"]
    assert [row[2] for row in rows] == ["fail", "fail", "-", "pass"]
    assert "The result is whether the check passed" in (pass_fail_run / "report.md").read_text(encoding="utf-8")
    assert "| best | pass at attempt 3; baseline fail |" in markdown_summary(read_run(pass_fail_run))


# -- pixels -----------------------------------------------------------------------------------------------
def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit truecolor PNG, decoded with zlib and struct."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw, stride, rows, previous = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, previous))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + previous[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, b = (line[i - bpp] if i >= bpp else 0), previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    if bpp == 4:  # drop the alpha channel
        rows = [_rgb(r) for r in rows]
    return width, height, rows


def _rgb(rgba: bytes) -> bytes:
    rgb = bytearray(len(rgba) // 4 * 3)
    for k in range(3):
        rgb[k::3] = rgba[k::4]
    return bytes(rgb)


def _pixels_of(rows: list[bytes], color: str, tolerance: int = 10) -> list[tuple[int, int]]:
    want = bytes.fromhex(color.lstrip("#"))
    found = []
    for y, row in enumerate(rows):
        for x in range(0, len(row), 3):
            if all(abs(row[x + k] - want[k]) <= tolerance for k in range(3)):
                found.append((x // 3, y))
    return found


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"
)


@needs_chromium
@pytest.mark.slow
def test_headless_chromium_draws_the_chart(metric_run: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    command = chromium_command(CHROMIUM, metric_run / "report.html", shot, tmp_path / "profile", 1200, 900)
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 900)
    keep, crash, reject = (_pixels_of(rows, COLORS[k]) for k in ("keep", "crash", "rejected"))
    assert len(keep) > 100 and len(crash) > 20 and len(reject) > 20, (len(keep), len(crash), len(reject))
    xs = [x for x, _ in keep]
    assert max(xs) - min(xs) > 500, "the kept points spread across the chart, left to right"
    ys = [y for _, y in keep + crash + reject]
    assert 200 < min(ys) and max(ys) < 900, "the chart sits below the header and the totals"


@needs_chromium
@pytest.mark.slow
def test_png_of_the_chart(metric_run: Path) -> None:
    paths = write_report(metric_run, png=True)
    assert paths.png == metric_run / "report.png"
    width, height, rows = read_png(paths.png)
    svg_height = int(re.search(r'height="(\d+)"', render_chart_svg(read_run(metric_run))).group(1))
    assert (width, height) == (1920, 2 * svg_height), "the 960 px wide chart at twice the pixels"
    assert len(_pixels_of(rows, COLORS["keep"])) > 400


@pytest.mark.skipif(any(Path(p).exists() for p in CHROMIUM_PATHS), reason="a Chromium app is installed")
def test_png_without_a_renderer_says_what_to_install(metric_run: Path, tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401

        pytest.skip("matplotlib is importable, so there is always a renderer")
    except ImportError:
        pass
    code = (
        "import sys; from pathlib import Path; from goalloop.report import write_report\n"
        "from goalloop.errors import GoalloopError\n"
        "try:\n    write_report(Path(sys.argv[1]), png=True)\nexcept GoalloopError as exc:\n"
        "    print(exc); sys.exit(7)\n"
    )
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(metric_run)], capture_output=True, text=True,
                          env={"PATH": str(empty)}, timeout=60)
    assert done.returncode == 7, done.stderr
    assert "neither was found" in done.stdout and "fix: install Chromium" in done.stdout
    assert "pip install matplotlib" in done.stdout


def test_png_with_matplotlib(metric_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from goalloop.report import _png_with_matplotlib

    png = _png_with_matplotlib(read_run(metric_run), tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- runs the CLI does not easily make ----------------------------------------------------------------------
def _record(tmp_path: Path, rows: list[tuple[str, float | None]], target: float | None = None) -> RunRecord:
    """A RunRecord as read_run returns it, for a run that is still going (no stop event)."""
    meta = RunMeta(
        run_id="edge-1", goal_name="edge", goal_path="/g.yaml", repo="/repo with space", base_commit="a" * 40,
        branch="goalloop/edge-1", worktree="/w", created_at="2026-01-01T00:00:00+00:00", metric_goal=True,
        direction="minimize", target=target,
    )
    attempts = [
        AttemptRecord(iteration=i, verdict=verdict, description=f"step {i}", metric=metric, commit="b" * 40)
        for i, (verdict, metric) in enumerate(rows)
    ]
    return RunRecord(meta=meta, attempts=attempts, stop=None, run_dir=tmp_path)


def test_an_outlier_does_not_squash_the_chart(tmp_path: Path) -> None:
    rows = [("baseline", 1.0), ("keep", 0.98), ("discard", 1.01), ("discard", 5e9), ("keep", 0.95)]
    chart = MetricChart.of(_record(tmp_path, rows))
    assert chart.high < 2, "the range follows the progress, not the 5e9 outlier"
    outlier = chart.points[3]
    assert outlier.clipped and outlier.value == chart.high and "5e+09" in outlier.tooltip
    assert not any(p.clipped for p in chart.points if p.iteration != 3)
    assert chart.best == [(0, 1.0), (1, 0.98), (4, 0.95)]


def test_a_crashed_baseline_and_a_running_run(tmp_path: Path) -> None:
    record = _record(tmp_path, [("baseline", None), ("crash", None), ("keep", 3.0)], target=2.0)
    chart = MetricChart.of(record)
    assert [(p.kind, p.value) for p in chart.points] == [("crash", None), ("crash", None), ("keep", 3.0)]
    html = render_html(record)
    assert "still running, or killed" in html and "git -C &#x27;/repo with space&#x27; diff" in html
    assert "no diff.patch recorded" in html
    assert "| best | 3 at attempt 2; baseline - |" in markdown_summary(record)
    assert render_html(_record(tmp_path, [])).count("data-iteration") == 0


# -- holdout, repeats, confirm: a run that overfits the visible check ----------------------------------------
@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adversary that overfits: attempt 1 raises the visible score and lowers the holdout (a warned keep),
    attempt 2 raises both; then three identical crashes (a stall) and a discard. keep.repeats 3 and
    keep.confirm; score.py adds -0.01, 0, +0.01 in turn, so the repeats have a spread."""
    base = tmp_path_factory.mktemp("overfit")
    score = (
        f"import knob, pathlib\nc = pathlib.Path({str(base / 'counter')!r})\n"
        "n = int(c.read_text()) if c.exists() else 0\nc.write_text(str(n + 1))\n"
        "print(f'score: {knob.X + (n % 3 - 1) * 0.01:.2f}')\n"
    )
    files = {"knob.py": "X = 1\nY = 5\n", "score.py": score, "holdout.py": "import knob\nprint(f'held: {knob.Y}')\n"}
    steps = [
        {"description": "raise X to 2 <b>and</b> lower Y", "files": {"knob.py": "X = 2\nY = 4\n"}},
        {"description": "raise X to 3", "files": {"knob.py": "X = 3\nY = 6\n"}},
        *({"description": f"break it ({n})", "files": {"knob.py": "X = (\n"}} for n in range(3)),
        {"description": "lower X", "files": {"knob.py": "X = 2.5\nY = 6\n"}},
    ]
    goal = {
        "name": "overfit",
        "check": {"run": "python3 score.py", "metric": r"^score:\s*(\S+)"},
        "holdout": {"run": "python3 holdout.py", "metric": r"^held:\s*(\S+)"},
        "keep": {"repeats": 3, "confirm": True},
        "budget": {"iterations": len(steps)},
        "proposer": {"kind": "scripted", "steps": steps},
    }
    run_dir = _record_run(base, files, goal)
    write_report(run_dir)
    return run_dir


def test_the_recorded_overfit_is_what_the_report_shows(overfit_run: Path) -> None:
    record = read_run(overfit_run)
    assert [(a.verdict, a.holdout) for a in record.attempts[:3]] == [("baseline", 5), ("keep", 4), ("keep", 6)]
    assert "holdout got worse" in record.attempts[1].warning and not record.attempts[2].warning
    assert len(record.attempts[1].samples) == 3


def test_chart_draws_the_holdout_of_the_baseline_and_each_kept_state(overfit_run: Path) -> None:
    page, html = _page(overfit_run)
    tsv = results_rows(overfit_run)
    kept = [row["iteration"] for row in tsv if row["verdict"] in ("baseline", "keep")]
    diamonds = [attrs for tag, attrs in page.tags if attrs.get("class") == "holdout-point"]
    assert [d["data-holdout-iteration"] for d in diamonds] == kept == ["0", "1", "2"]
    assert all(tag == "polygon" for tag, attrs in page.tags if attrs.get("class") == "holdout-point")
    assert {d["fill"] for d in diamonds} == {COLORS["holdout"]}
    assert [attrs for tag, attrs in page.tags if attrs.get("class") == "holdout"][0]["stroke-dasharray"]
    assert "holdout (same scale)" in html, "5, 4, 6 sits well beside 1, 2, 3: one scale, and the legend says so"
    assert len(page.points) == len(tsv), "the holdout diamonds are not attempt points"


def test_the_warned_keep_is_marked_in_chart_table_and_markdown(overfit_run: Path) -> None:
    page, html = _page(overfit_run)
    rings = [attrs for tag, attrs in page.tags if attrs.get("class") == "warned" and tag == "circle"]
    assert [r["data-warned-iteration"] for r in rings] == ["1"]
    rows = {attrs["id"]: attrs for tag, attrs in page.tags if tag == "tr" and "id" in attrs}
    assert rows["attempt-1"].get("class") == "warned"
    assert not any(rows[f"attempt-{n}"].get("class") for n in (0, 2, 3, 6))
    assert '<div class="warning">⚠ holdout got worse beyond its noise (5 -&gt; 4, p=0): overfitting the visible check?</div>' in html
    assert html.count('<div class="warning">') == 1
    assert "raise X to 2 &lt;b&gt;and&lt;/b&gt; lower Y" in html and "<b>and" not in html

    header, md_rows = _markdown_table((overfit_run / "report.md").read_text(encoding="utf-8"), "## Attempts")
    description = header.index("description")
    assert "⚠ holdout got worse beyond its noise (5 -> 4" in md_rows[1][description]
    assert not any("⚠" in row[description] for i, row in enumerate(md_rows) if i != 1)


def test_markdown_shows_the_holdout_in_the_result_and_leaves_measurements_to_the_page(overfit_run: Path) -> None:
    header, rows = _markdown_table((overfit_run / "report.md").read_text(encoding="utf-8"), "## Attempts")
    expected = results_rows(overfit_run)
    assert header == ["#", "verdict", "result", "description"]
    assert [row[:2] for row in rows] == [[tsv["iteration"], tsv["verdict"]] for tsv in expected]
    assert [row[2] for row in rows[:3]] == ["1, holdout 5", "2, holdout 4 ⚠", "3, holdout 6"]
    assert rows[3][2] == "-" and rows[6][2] == "2.49", "a crash has no metric; a discard has no holdout"
    assert not any("n=3" in row[2] for row in rows), "every measurement is in report.html, not in the table"
    page, html = _page(overfit_run)
    assert '<th class="n">holdout</th>' in html
    assert '<div class="samples">(n=3, 1.99–2.01)</div>' in html


def test_findings_list_noise_stall_confirm_and_warnings(overfit_run: Path) -> None:
    summary = markdown_summary(read_run(overfit_run))
    findings = summary[summary.index("Findings:"):summary.index("See the change:")]
    assert "- noise: the baseline measured 3 times, spread 0.02\n" in findings
    assert re.search(r"- confirm: the best measured again: 3(\.0\d)?, drift [+-]\d", findings), findings
    assert findings.count("- stalled: check exited with code #") == 1, "each distinct stall once"
    assert "- warning: attempt 1: holdout got worse beyond its noise (5 -> 4, p=0): overfitting the visible check?" in findings
    assert summary.split("\n", 2)[2] in (overfit_run / "report.md").read_text(encoding="utf-8"), "report.md starts with it"
    page, html = _page(overfit_run)
    assert "<h2>Findings</h2>" in html
    text = "".join(page.text)
    assert "noise: the baseline measured 3 times, spread 0.02" in text and "confirm: the best measured again: " in text
    assert html.index("<h2>Findings</h2>") < html.index("<svg"), "findings come before the chart"


def test_a_run_without_holdout_or_repeats_has_no_extra_columns(metric_run: Path) -> None:
    _, rows = _markdown_table((metric_run / "report.md").read_text(encoding="utf-8"), "## Attempts")
    assert not any("holdout" in row[2] for row in rows)
    html = (metric_run / "report.html").read_text(encoding="utf-8")
    for absent in ('class="holdout', '<th class="n">holdout', 'class="samples"', 'class="warned'):
        assert absent not in html, absent
    assert "gains are single measurements (keep.repeats: 1)" in html, "the only finding: no repeats"


def test_a_holdout_far_from_the_metric_gets_its_own_scale_and_stays_escaped(tmp_path: Path) -> None:
    record = _record(tmp_path, [("baseline", 0.50), ("keep", 0.45), ("discard", 0.47), ("keep", 0.40)])
    for attempt, held in zip(record.attempts, (120.0, 131.0, None, 118.0)):
        attempt.holdout = held
    record.attempts[1].warning = EVIL
    record.attempts[3].samples = [0.41, 0.40, 0.39]
    record.events = [{"event": "confirm", "metric": None, "drift": None, "problem": EVIL}]
    chart = MetricChart.of(record)
    assert chart.holdout == [(0, 120.0), (1, 131.0), (3, 118.0)] and chart.holdout_range is not None
    assert chart.high < 1, "the metric's scale is not stretched to the holdout's"
    html = render_html(record)
    assert "holdout (right scale)" in html and 'data-warned-iteration="1"' in html
    assert "<script" not in html and "<img" not in html
    assert html.count("&lt;script&gt;document.title") >= 3, "the warning in the table, findings and a tooltip"
    assert "confirm: the best measured again gave no result (" in html
    summary = markdown_summary(record)
    assert "<script" not in summary and "confirm: the best measured again gave no result (&lt;script>" in summary


@needs_chromium
@pytest.mark.slow
def test_headless_chromium_draws_the_holdout_and_the_warning(overfit_run: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    command = chromium_command(CHROMIUM, overfit_run / "report.html", shot, tmp_path / "profile", 1200, 1500)
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    _, _, rows = read_png(shot)
    holdout, warned = _pixels_of(rows, COLORS["holdout"], 24), _pixels_of(rows, COLORS["warned"], 24)
    assert len(holdout) > 150 and len(warned) > 40, (len(holdout), len(warned))
    xs = [x for x, _ in holdout]
    assert max(xs) - min(xs) > 500, "the holdout step runs across the chart"
