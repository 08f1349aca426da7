"""``report.html`` in every archived session, and ``summary.md`` for GitHub's step summary.

Real pytest sessions (pytester) on plain runs written as CSV logs (no training): the page is
well-formed HTML (every tag balanced), self-contained (nothing fetched, no script), escapes
what the run dir and gate file say, draws the RED criterion's threshold and failing epoch,
and names the verdict's fingerprint.  A headless Chromium takes a screenshot when one is
installed (skipped otherwise).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from seed_runs import RUN_SECTION, run_args, write_seed, write_seeds

from pytest_mlgates import report_html
from pytest_mlgates.archive_contents import format_markdown
from pytest_mlgates.ledger import LEDGER_NAME, read_ledger

GATES = RUN_SECTION + """\
exit_criteria:
  - name: minority_not_collapsed
    check: "final.val_recall_malignant > 0.5"
  - name: every_class_learned
    gate: class_recall
    floor: 0.2
  - name: loss_decreases
    check: "min(val_loss) < first(val_loss)"
  - name: "see <img src=http://evil.example/x.png> & <script>alert(1)</script>"
    check: "len(val_loss) > 0"
"""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Balance(HTMLParser):
    """Every non-void tag closed in order; every src/href kept for the network check."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.links: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(page: str) -> Balance:
    parser = Balance()
    parser.feed(page)
    parser.close()
    return parser


def archived(run: Path) -> tuple[dict[str, object], Path]:
    [entry] = read_ledger(run / "acceptance" / LEDGER_NAME).entries
    return entry, run / "acceptance" / str(entry["archive_dir"])


@pytest.fixture
def red_session(pytester: pytest.Pytester) -> tuple[dict[str, object], Path]:
    """One session on the collapsed seed: RED, archived."""
    run = write_seed(pytester.path / "runs", 2, collapsed=True)
    pytester.makefile(".gates.yaml", exp=GATES)
    result = pytester.runpytest("-p", "no:cacheprovider", *run_args([run], pytester.path))
    result.assert_outcomes(passed=2, failed=2)
    return archived(run)


def test_report_is_well_formed_self_contained_and_marks_the_red_threshold(
    red_session: tuple[dict[str, object], Path]
) -> None:
    entry, archive = red_session
    page = (archive / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    parsed = parse(page)
    assert parsed.problems == [] and parsed.stack == []
    # self-contained: nothing fetched, no script at all (the gate file's <script> is text)
    assert parsed.links == []
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "link", "iframe", "object")]
    assert not [v for _, attrs in parsed.tags for v in attrs.values()
                if v and re.match(r"\s*(https?:|//)", v, re.IGNORECASE)]
    assert "url(" not in page and "@import" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=http" in page
    # the RED criteria's thresholds on the recall chart, the failing epoch marked
    thresholds = {a.get("data-criterion"): a for t, a in parsed.tags
                  if t == "line" and a.get("class") == "threshold"}
    assert set(thresholds) == {"minority_not_collapsed", "every_class_learned"}
    marks = [a for t, a in parsed.tags if t == "circle" and a.get("class") == "failing-epoch"]
    assert len(marks) == 2
    curves = [a for t, a in parsed.tags if t == "polyline"]
    assert len(curves) == 4  # train_loss, val_loss | both recalls (val_accuracy: not named)
    assert "<h3>loss</h3>" in page and "<h3>recall</h3>" in page
    # the verdict's fingerprint, the table with every criterion
    assert str(entry["fingerprint"]) in page
    assert page.count("<tr>") == 1 + 4


def test_report_and_summary_of_a_green_seed_have_no_red_marks(
    pytester: pytest.Pytester
) -> None:
    [run] = write_seeds(pytester.path)[:1]
    pytester.makefile(".gates.yaml", exp=GATES)
    pytester.runpytest("-p", "no:cacheprovider", *run_args([run], pytester.path))
    entry, archive = archived(run)
    assert entry["verdict"] == "GREEN"
    page = (archive / "report.html").read_text(encoding="utf-8")
    assert 'class="threshold"' not in page and "is <span" in page
    summary = (archive / "summary.md").read_text(encoding="utf-8")
    assert "| minority_not_collapsed | check | 0.900 | > 0.5 | GREEN |" in summary
    outside_code = re.sub(r"(`+).*?\1", "", summary)
    assert "http" not in outside_code and "<" not in outside_code.replace("| <", "")


def test_a_long_log_is_thinned_and_the_page_bounded() -> None:
    n = 200_000
    epochs = [float(i) for i in range(1, n + 1)]
    columns = {"train_loss": (epochs, [1.0 / i for i in range(1, n + 1)]),
               "val_recall_0": (epochs, [0.0 if i == n // 2 else 0.9 for i in range(1, n + 1)])}
    criteria = [{"name": "recall", "status": "RED", "value": "0.9", "threshold": "> 0.95",
                 "message": f"val_recall_0 = 0.900 at epoch {n} (final); needs > 0.95"}]
    page = report_html.render_report(run="r", verdict="RED", criteria=criteria,
                                     fingerprint="ab" * 32, algorithm="sha256",
                                     columns=columns)
    assert len(page.encode()) <= report_html.MAX_PAGE
    for points in re.findall(r'points="([^"]*)"', page):
        assert len(points.split()) <= report_html.MAX_POINTS
    # the one-epoch collapse survives the thinning
    recall = report_html.downsample(*columns["val_recall_0"])
    assert min(y for _, y in recall) == 0.0
    assert 'class="threshold" data-criterion="recall"' in page


def test_summary_md_stays_under_the_step_summary_limit_and_links_nothing() -> None:
    criteria = [{"name": f"c{i}", "gate": "check", "status": "RED" if i % 7 else "GREEN",
                 "value": "[x](https://example.com) <img src=x> " + "v" * 400,
                 "threshold": "> 0"} for i in range(20_000)]
    text = format_markdown("runs/a", "RED", criteria, limit=1 << 20)
    assert len(text.encode()) <= 1 << 20
    assert re.search(r"^\d+ more criteria \(\d+ not GREEN\) are not shown", text, re.MULTILINE)
    outside_code = re.sub(r"(`+).*?\1", "", text)
    assert "http" not in outside_code and "](" not in outside_code and "<img" not in outside_code


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_report_in_a_headless_browser(red_session: tuple[dict[str, object], Path]) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (install the distribution's chromium)")
    _, archive = red_session
    shot = archive / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1100,1400", f"--screenshot={shot}",
                    (archive / "report.html").as_uri()],
                   capture_output=True, timeout=60, check=False)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_json_keeps_every_criterion_the_page_shows(
    red_session: tuple[dict[str, object], Path]
) -> None:
    _, archive = red_session
    results = json.loads((archive / "results.json").read_text())
    page = (archive / "report.html").read_text(encoding="utf-8")
    for criterion in results["criteria"]:
        assert f">{report_html._esc(criterion['name'])}</td>" in page
        assert f'<td title="{report_html._esc(criterion["id"])}">' in page


def test_a_run_without_a_readable_log_gets_a_page_that_says_why(tmp_path: Path) -> None:
    columns, _, problem = report_html.load_columns(tmp_path, None, None)
    assert columns is None and problem
    page = report_html.render_report(run="r", verdict="RED", criteria=[], fingerprint=None,
                                     algorithm=None, columns=None, log_problem=problem)
    assert "No curves: the run's log could not be read" in page
    assert parse(page).problems == []


def test_the_red_column_is_drawn_however_many_classes_there_are() -> None:
    columns = ["epoch"] + [f"val_recall_{i}" for i in range(30)]
    criteria = [{"name": "c29", "status": "RED", "value": "0.000", "threshold": "> 0",
                 "message": "val_recall_29 = 0.000 at epoch 3 (final); needs > 0"}]
    charts = report_html.choose_charts(columns, criteria)
    [(title, names)] = charts
    assert "val_recall_29" in names and len(names) == report_html.MAX_SERIES
    assert title == f"recall ({30 - report_html.MAX_SERIES} more columns not drawn)"
