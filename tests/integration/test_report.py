"""``km2pg report`` on demo-like data, and its HTML file drawn by a real headless Chromium.

Chromium and its driver come from Debian (``make browser`` installs them; this module tries the
same when they are missing and it may). The test is skipped only where they cannot be installed.
The screenshot of the drawn report stays in the test's tmp_path (printed), for a person to look at.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import dsn_of, km2pg, load_demo_database

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHARTS = ("people", "actions", "funnel", "retention", "ab_test", "revenue")
# Without the networking flags Chromium's own background connections fail here, noisily.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def _install_chromium() -> str | None:
    """Install Chromium from Debian when missing; the reason it cannot be, else None."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "Chromium is not installed and cannot be here (needs apt-get as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            return f"installing Chromium failed: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"km2pg-chromium-{os.getpid()}"
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_dsn(pg_admin, template_database, tmp_path_factory):
    """A database holding demo data (28 days up to now, as ``km2pg demo`` makes), smaller."""
    from tests.conftest import drop_database

    folder = tmp_path_factory.mktemp("demo")
    settings = load_demo_database(pg_admin, template_database, folder, lines=30_000, files=3)
    yield dsn_of(settings)
    drop_database(pg_admin, settings)


@pytest.fixture(scope="module")
def report_run(demo_dsn, tmp_path_factory):
    """``km2pg report`` with every option left to its default."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = km2pg("report", "--dsn", demo_dsn, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_report_prints_every_section_with_defaults_found_in_the_data(report_run):
    _, stdout = report_run
    for title in ("People per day", "Top actions", "Funnel", "Retention by week"):
        assert f"\n{title}\n" in stdout
    # The demo's experiment and revenue are found without being named.
    assert "A/B test: homepage variation -> " in stdout
    assert "Revenue by day: billing amount" in stdout
    assert "km2pg.funnel(array['visited site', 'viewed product', " in stdout
    assert re.search(r"report written to .*report\.html \(\d+\.\d MB", stdout)


def test_report_html_is_self_contained(report_run):
    out, _ = report_run
    text = out.read_text(encoding="utf-8")
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", text)
    assert tags, "the report has no script at all"
    assert not [t for t in tags if re.search(r"\b(?:src|href)=", t)], tags


def test_every_chart_draws_offline_without_console_errors(report_run, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    out, _ = report_run
    browser.get(out.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('.chart')].every(c => c.dataset.drawn)"
        )
    )
    # Marks with a size: bars, heatmap image, line, error bars; per chart.
    marks = browser.execute_script(
        """
        const out = {};
        for (const div of document.querySelectorAll('.chart')) {
          const found = div.querySelectorAll(
            '.point path, .hm image, .js-line, .errorbar path');
          out[div.id] = [...found].filter(m => {
            const b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0;
          }).length;
        }
        return out;
        """
    )
    assert set(marks) == {f"chart-{c}" for c in CHARTS}
    assert all(n > 0 for n in marks.values()), marks
    assert marks["chart-people"] >= 20  # a bar per day with people

    shot = tmp_path / "report.png"
    page = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    shot.write_bytes(base64.b64decode(page["data"]))
    print(f"screenshot: {shot}")

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    fetched = [
        url
        for entry in browser.get_log("performance")
        for url in re.findall(r'"Network\.requestWillBeSent".*?"url":"([^"]+)"', entry["message"])
    ]
    assert out.as_uri() in fetched, "the performance log did not see the page load"
    # chrome:// requests are the browser's own new-tab page; nothing may go to the network.
    remote = [u for u in fetched if not u.startswith(("file:", "data:", "blob:", "chrome:"))]
    assert not remote, remote


def test_report_without_events_says_what_to_do(pg_admin, template_database, tmp_path):
    from tests.conftest import create_database, drop_database

    settings = create_database(pg_admin, template_database)
    try:
        done = km2pg("report", "--dsn", dsn_of(settings), "--out", str(tmp_path / "r.html"))
    finally:
        drop_database(pg_admin, settings)
    assert done.returncode == 2
    assert "no events loaded yet" in done.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-02-01", "--until", "2026-01-01"], "must be before --until"),
        (["--since", "yesterday"], "not a date (YYYY-MM-DD)"),
        (["--retention", "a,b,c"], "--retention takes two actions"),
        (["--funnel", "a"], "--funnel needs at least two actions"),
        (["--funnel", "a,,b"], "empty name"),
        (["--conversion", "signed up"], "--conversion needs --experiment"),
    ],
)
def test_bad_report_options_give_one_clear_error(demo_dsn, tmp_path, args, message):
    done = km2pg("report", "--dsn", demo_dsn, "--out", str(tmp_path / "r.html"), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_report_of_an_export_without_experiment_or_revenue_says_so(database, tmp_path):
    from tests.helpers import load_serially, write_export

    t = 1_780_000_000  # 2026-05-28
    # Signing up comes a minute after the visit: the default funnel follows that order, not
    # the alphabet.
    lines = [
        {"_n": name, "_p": person, "_t": t + 3600 * hour + 60 * step, "plan": "pro"}
        for hour, person in enumerate(["ann", "bob", "cy"])
        for step, name in enumerate(("visited site", "signed up"))
    ]
    load_serially(database, [write_export(tmp_path, 1, lines)])
    out = tmp_path / "r.html"
    done = km2pg("report", "--dsn", dsn_of(database), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "range: the 30 days up to the newest event (2026-05-28)" in done.stdout
    assert "(no experiment: pass --experiment KEY --conversion ACTION)" in done.stdout
    assert "(no revenue: no 'billing amount' property loaded (pass --revenue KEY))" in done.stdout
    assert re.search(r"\n +2 +signed up +3 +100\.0% +100\.0%\n", done.stdout), done.stdout
    text = out.read_text(encoding="utf-8")
    assert 'id="chart-funnel"' in text
    assert 'id="chart-ab_test"' not in text
    assert "no experiment: pass --experiment KEY" in text
