"""A real headless browser for page tests: Debian's chromium driven by selenium + chromium-driver.

`make test` installs chromium with apt-get when it is missing. Without a browser the tests skip,
except under CI (CI=true), where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser")
DRIVERS = ("chromedriver", "chromium-driver")


def _which(names) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None) or next(
        (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromedriver") if Path(p).exists() and
         Path(p).name in {n.split("/")[-1] for n in names} | {"chromium"}), None)


def chromium_driver():
    """A headless selenium Chrome driver on Debian's chromium (skips, or fails under CI, without one)."""
    browser, driver_bin = _which(BROWSERS), _which(DRIVERS)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        browser = None
    if not browser or not driver_bin:
        message = "no headless browser: apt-get install chromium chromium-driver (and pip install selenium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2200", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)


def severe_console_messages(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


TINY_LSA = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": 40,
            "train.n_records": 6, "train.eval_prompts": 2000, "train.eval_prompts_during": 500,
            "train.checkpoint_every": 20, "sampled_check": False}


def tiny_run(out, seeds: int = 2, **overrides):
    """A linreg-lsa run of a few seconds (two seeds), with its claims, figures and report.html."""
    import icldyn

    return icldyn.run("linreg-lsa", overrides={**TINY_LSA, **overrides}, seeds=seeds, out=out)


PAGE_FACTS = """
const imgs = Array.from(document.images);
return {
  claims: Array.from(document.querySelectorAll('#claims-table tr.claim')).map(
      r => [r.dataset.claim, r.className.replace('claim', '').trim(), r.querySelector('td.verdict').innerText]),
  images: imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  plots: Array.from(document.querySelectorAll('.js-plotly-plot')).map(
      p => [p.data.length, p.querySelectorAll('g.trace, g.scatterlayer .trace').length,
            p.querySelectorAll('path.js-line').length]),
  resources: performance.getEntriesByType('resource').map(e => e.name),
};
"""


def page_facts(driver, url: str) -> dict:
    """Load a page and read back its rendered DOM: claim rows, images (loaded, natural width), plots."""
    import time

    driver.get(url)
    deadline = time.time() + 20
    while time.time() < deadline:
        done = driver.execute_script("return document.readyState === 'complete' && "
                                     "Array.from(document.images).every(i => i.complete)")
        if done:
            break
        time.sleep(0.2)
    return driver.execute_script(PAGE_FACTS)
