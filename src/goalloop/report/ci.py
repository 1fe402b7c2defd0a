"""What a GitHub Actions job shows of a run: the step summary, the pull request body, and the workflow
commands (`::group::`, `::warning::`) around the progress lines.

GitHub's limits shape all three: a pull request body holds at most 65,536 characters and a step summary
1 MiB, so both are built to stay within them whatever the number of attempts: the summary's full table
sits in a collapsed <details> and is cut (with a note) before the limit; the body is the summary and a
link to the job's artifacts, where the whole record is.
"""

from __future__ import annotations

import os

from goalloop.ledger import RunRecord
from goalloop.report.data import _attempts, findings
from goalloop.report.markdown import ATTEMPTS_HEADER, attempt_row, markdown_summary

PR_BODY_LIMIT = 65_536
"""GitHub refuses a pull request body longer than this (characters)."""
STEP_SUMMARY_LIMIT = 1_048_576
"""GitHub refuses a step summary larger than this (bytes)."""
_SUMMARY_BUDGET = STEP_SUMMARY_LIMIT // 2
"""What goalloop's part of a step summary may take, leaving room for the job's other steps."""


def step_summary(record: RunRecord) -> str:
    """The compact summary, then every attempt in a collapsed table (cut before GitHub's limit)."""
    head = markdown_summary(record)
    rows = [attempt_row(a, record.meta.metric_goal) for a in _attempts(record)]
    close = ["", "</details>", ""]
    budget = _SUMMARY_BUDGET - len(head.encode()) - 400
    shown: list[str] = []
    used = 0
    for row in rows:
        used += len(row.encode()) + 1
        if used > budget:
            break
        shown.append(row)
    cut = [] if len(shown) == len(rows) else [
        "", f"The first {len(shown)} of {len(rows)} rows; all of them are in report.md and results.tsv."]
    opening = ["", "<details>", f"<summary>Every attempt ({len(rows) - 1} and the baseline)</summary>", ""]
    return "\n".join([head.rstrip("\n"), *opening, *ATTEMPTS_HEADER, *shown, *cut, *close])


def pr_body(record: RunRecord, record_url: str | None = None) -> str:
    """A pull request body: the summary and where the whole record is; never over GitHub's limit."""
    where = (f"The whole record (report.html with the chart and every diff, every prompt and check output): "
             f"{record_url}" if record_url else
             f"The whole record is `runs/{record.meta.run_id}/` (report.html, report.md, results.tsv).")
    footer = f"\n---\n{where}\n\nOpened by goalloop from run `{record.meta.run_id}`.\n"
    kept_shown = 20
    while True:
        body = markdown_summary(record, kept_shown=kept_shown) + footer
        if len(body) <= PR_BODY_LIMIT - 1_000 or kept_shown == 0:
            break
        kept_shown //= 2
    if len(body) > PR_BODY_LIMIT - 1_000:  # huge findings or descriptions: keep the head, then the footer
        body = body[: PR_BODY_LIMIT - 1_000 - len(footer) - 40] + "\n\n(cut to fit)\n" + footer
    return body


def job_url() -> str | None:
    """This job's page on GitHub, where its artifacts are listed (None outside GitHub Actions)."""
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def warnings(record: RunRecord, *, holdout: bool = True) -> list[str]:
    """`::warning::` commands for what a person should look at: stalls and (unless `holdout` is False,
    when the progress lines said them already) keeps that made the holdout worse."""
    found = []
    for line in findings(record):
        if line.startswith("warning: attempt ") and holdout:
            found.append(command("warning", line.removeprefix("warning: "), title="holdout got worse"))
        elif line.startswith("stalled: "):
            found.append(command("warning", line, title="goalloop stalled"))
    return found


def command(kind: str, message: str, **properties: str) -> str:
    """One GitHub workflow command line, its message and properties escaped as GitHub requires."""
    props = ",".join(f"{k}={_escape(v, property_value=True)}" for k, v in properties.items() if v)
    return f"::{kind}{' ' + props if props else ''}::{_escape(message)}"


def _escape(text: str, *, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text
