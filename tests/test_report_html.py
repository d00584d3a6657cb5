"""The HTML page of a run, rendered in a real headless browser (Debian's chromium via selenium).

Asserts on the rendered DOM, not on the HTML text: one row per claim with the verdict class of
claims.json, every image loaded (natural width > 0), every interactive plot drew its traces, no
console errors. The screenshots land in $ICLDYN_SCREENSHOTS when set (for a person to look at).
"""

from __future__ import annotations

import json
import re
import os
import shutil
from pathlib import Path

import pytest

from browser import chromium_driver, page_facts, severe_console_messages, tiny_run
from icldyn.report.html import claim_rows, render_run, write_index

VERDICT_CLASS = {True: "pass", False: "fail", None: "na"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def driver():
    d = chromium_driver()
    yield d
    d.quit()


def _shot(driver, path: Path, name: str) -> None:
    driver.save_screenshot(str(path / name))
    if os.environ.get("ICLDYN_SCREENSHOTS"):
        Path(os.environ["ICLDYN_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path / name, Path(os.environ["ICLDYN_SCREENSHOTS"]) / name)


def test_run_writes_its_page_offline(run):
    page = (run.path / "report.html").read_text()
    assert (run.path / "config.json").exists()
    assert json.loads((run.path / "config.json").read_text())["experiment"] == "linreg-lsa"
    assert '<td>complete</td><td class="mono">True</td>' in page  # written once complete
    assert not re.search(r"<script[^>]*\bsrc=", page) and not re.search(r"<link[^>]*href=\"http", page)


def test_page_renders_in_a_browser(run, driver, tmp_path):
    facts = page_facts(driver, (run.path / "report.html").as_uri())
    _shot(driver, tmp_path, "report_run.png")
    stored = json.loads((run.path / "claims.json").read_text())["claims"]
    assert len(facts["claims"]) == len(stored) > 0
    for (cid, cls, word), claim in zip(facts["claims"], stored):
        assert cid == claim["id"] and cls == VERDICT_CLASS[claim["passed"]]
        assert word == {True: "pass", False: "FAIL", None: "n/a"}[claim["passed"]]
    figures = sorted((run.path / "figures").glob("*.png"))
    assert len(facts["images"]) == len(figures) > 0
    assert all(complete and width > 0 for _, complete, width in facts["images"])
    assert facts["plots"] and all(n_data > 0 and n_drawn > 0 for n_data, n_drawn, _ in facts["plots"])
    assert all(u.startswith(("file:", "data:")) for u in facts["resources"])  # offline
    assert severe_console_messages(driver) == []
    _click_time_axis_and_log_x(run, driver)


def _click_time_axis_and_log_x(run, driver):
    """A person's clicks: the first plot's "time (Σ lr)" button puts every trace on the Σ lr clock of
    metrics.parquet; "log x" makes the x axis logarithmic."""
    import time

    import pandas as pd

    plot = driver.find_element("id", "plot-0")
    name = driver.execute_script("return document.getElementById('plot-0').layout.title.text")
    metrics = pd.read_parquet(run.path / "metrics.parquet")
    rows = metrics[metrics["name"] == name]
    buttons = plot.find_elements("css selector", "g.updatemenu-button")
    buttons[1].click()
    time.sleep(0.3)
    xs = driver.execute_script("return document.getElementById('plot-0').data.map(t => t.x)")
    mean_x = xs[-1]  # the mean trace is drawn last
    assert mean_x == pytest.approx(sorted(rows.drop_duplicates("step")["time"]))
    plot.find_elements("css selector", "g.updatemenu-button")[2].click()
    time.sleep(0.3)
    assert driver.execute_script("return document.getElementById('plot-0').layout.xaxis.type") == "log"


def test_a_missing_figure_is_seen_as_not_loaded(run, driver, tmp_path):
    """Negative control of the image check: a page whose figure file is gone shows a 0-width image."""
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("checkpoints"))
    for f in (copy / "figures").glob("*.png"):
        f.unlink()
    facts = page_facts(driver, (copy / "report.html").as_uri())
    assert facts["images"] and all(width == 0 for _, _, width in facts["images"])
    assert any("figures/" in m for m in severe_console_messages(driver))  # the console check sees it too


def test_index_lists_failing_claims_first(run, driver, tmp_path):
    target = write_index([{"experiment": "linreg-lsa", "title": "t", "path": run.path, "claims": run.claims,
                           "wall_s": 12.0}], tmp_path / "index.html")
    driver.get(target.as_uri())
    n_fail = sum(c["passed"] is False for c in run.claims)
    rows = driver.find_elements("css selector", "#failing-table tr.claim.fail")
    assert len(rows) == n_fail
    link = driver.find_element("css selector", "#experiments-table a")
    assert Path(link.get_attribute("href").removeprefix("file://")).resolve() == (run.path / "report.html").resolve()
    _shot(driver, tmp_path, "report_index.png")
    assert severe_console_messages(driver) == []


def test_claim_text_is_escaped(run):
    run.claims = [{"id": "x", "statement": "<script>alert(1)</script>", "source": "s", "measured": 1.0,
                   "expected": "< 2", "passed": True}]
    html = render_run(run)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_claim_rows_verdicts():
    rows = claim_rows([{"id": "a", "passed": True, "measured": 0.5, "expected": "< 1"},
                       {"id": "b", "passed": False, "measured": float("nan"), "expected": "< 1"},
                       {"id": "c", "passed": None, "measured": None, "expected": "> 0", "note": "not measured"}])
    assert [(r["cls"], r["verdict"], r["measured"]) for r in rows] == [
        ("pass", "pass", "0.5"), ("fail", "FAIL", "NaN"), ("na", "n/a", "—")]


def test_sweep_pages_share_plotly_and_link_their_variants(tmp_path, driver):
    import icldyn
    from browser import TINY_LSA

    sweep = icldyn.run("linreg-lsa", overrides=TINY_LSA, seeds=1, out=tmp_path, sweep={"train.lr": [0.02, 0.05]})
    assert set(sweep.variants) and (sweep.path / "plotly.min.js").exists()
    top = page_facts(driver, (sweep.path / "report.html").as_uri())
    assert top["plots"] and all(n_data == len(sweep.variants) and n_drawn == n_data for n_data, n_drawn, _ in top["plots"])
    links = [a.get_attribute("href") for a in driver.find_elements("css selector", "#variants-table a")]
    assert len(links) == len(sweep.variants)
    _shot(driver, tmp_path, "report_sweep.png")
    assert severe_console_messages(driver) == []
    for link in links:
        page = page_facts(driver, link)
        assert page["plots"] and all(n_drawn > 0 for _, n_drawn, _ in page["plots"])
        assert severe_console_messages(driver) == []
    for sub in sweep.variants.values():  # the variants' pages are small: plotly.js is not copied into them
        assert (sub.path / "report.html").stat().st_size < (sweep.path / "plotly.min.js").stat().st_size / 4
