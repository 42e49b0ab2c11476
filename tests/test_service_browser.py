"""The dashboard in a real browser: Debian's chromium driven by Playwright.

Starts ``retain serve`` on a free port over a demo store (the CDNOW sample,
fitted and scored when those commands exist), loads every page, checks that
each chart drew on its canvas (pixels, not just HTML), searches for a customer,
opens the report file, and saves screenshots under ``test-artifacts/``.

Needs ``apt-get install chromium`` and ``pip install playwright`` (never
``playwright install``: the browser is Debian's). Skipped when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# CI sets RETAIN_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip.
REQUIRED = os.environ.get("RETAIN_REQUIRE_BROWSER") == "1"
if not Path(CHROMIUM).exists() and REQUIRED:
    raise RuntimeError(
        f"RETAIN_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)"
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (apt-get install -y chromium)",
    ),
]

# page name -> (path, charts that must be drawn on it)
PAGES: dict[str, tuple[str, list[str]]] = {
    "overview": ("/", ["clv-distribution", "revenue-new-returning"]),
    "cohorts": ("/cohorts", ["cohort-heatmap", "cohort-clv"]),
    "segments": ("/segments", ["segment-treemap", "rfm-grid"]),
    "models": ("/models", ["model-tracking", "p-alive-matrix", "churn-lifespan"]),
    "model-health": (
        "/model-health",
        ["backtest-calibration", "backtest-deciles", "backtest-bias"],
    ),
    "at-risk": ("/at-risk", ["risk-levels"]),
    "customers": ("/customers", []),
    "campaigns": ("/campaigns", []),
    "loyalty": ("/loyalty", ["loyalty-expiring"]),
    "whatif": ("/whatif", ["whatif-revenue", "whatif-active"]),
    "subscriptions": ("/subscriptions", []),
    "feedback": ("/feedback", []),
    "segment-drill-down": ("/segments/Champions", []),
}

# Every canvas's size and how many of its pixels were painted.
CANVASES_JS = """
() => Array.from(document.querySelectorAll('canvas[data-chart]')).map(c => {
  let painted = 0;
  try {
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  } catch (e) { painted = -1; }
  return {id: c.dataset.chart, width: c.width, height: c.height, painted: painted,
          error: c.dataset.error || null};
})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def retain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retain.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def demo_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample, fitted, scored and backtested (the repeat-purchase models) when
    this retain has those commands."""
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    shutil.copy(cdnow_sample_db, path)
    commands = retain("--help").stdout
    for command, *options in (
        ("fit",),
        ("score",),
        ("backtest", "--no-learned"),
        ("loyalty", "build"),
    ):
        if f" {command} " in commands:
            done = retain(command, *options, "--db", str(path))
            assert done.returncode == 0, done.stderr
    return path


@contextlib.contextmanager
def serving(db: Path) -> Iterator[str]:
    """``retain serve`` over ``db`` on a free port, until the block ends: its address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "retain.cli", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read() if process.stdout else ""
                    pytest.fail(f"retain serve did not start: {output}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(demo_db: Path) -> Iterator[str]:
    with serving(demo_db) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if REQUIRED:
        import playwright.sync_api as sync_api
    else:
        sync_api = pytest.importorskip(
            "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
        )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.problems = []
    tab.on("pageerror", lambda error: tab.problems.append(str(error)))
    tab.on("console", lambda m: tab.problems.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()


def shoot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def check_charts(tab: Any, expected: list[str]) -> None:
    canvases = {c["id"]: c for c in tab.evaluate(CANVASES_JS)}
    for chart in expected:
        assert chart in canvases, f"no canvas for {chart}"
        drawn = canvases[chart]
        assert drawn["error"] is None, drawn
        assert drawn["width"] > 100 and drawn["height"] > 100, drawn
        # a drawn chart paints a good part of its canvas; an empty one paints nothing
        assert drawn["painted"] > 0.02 * drawn["width"] * drawn["height"], drawn


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_and_draws_its_charts(server: str, page: Any, name: str) -> None:
    path, expected = PAGES[name]
    response = page.goto(server + path)
    assert response is not None and response.status == 200
    page.wait_for_load_state("load")
    # how fast is measured by benchmarks/bench_service.py, not here: a loaded machine is slow
    check_charts(page, expected)
    assert page.locator("h1").count() >= 1
    shoot(page, name)
    assert page.problems == []


def test_customer_page_and_search(server: str, page: Any) -> None:
    with urllib.request.urlopen(server + "/api/customers?sort=net_revenue&limit=1") as response:
        customer_id = json.loads(response.read())["customers"][0]["customer_id"]
    page.goto(server + "/")
    page.fill("form.search input[name=q]", customer_id)
    page.press("form.search input[name=q]", "Enter")
    page.wait_for_url(f"**/customers/{customer_id}")
    assert f"Customer {customer_id}" in page.locator("h1").inner_text()
    check_charts(page, ["customer-history"])
    assert page.locator("table.data tbody tr").count() >= 1
    shoot(page, "customer")
    page.fill("form.search input[name=q]", "no-such-customer")
    page.press("form.search input[name=q]", "Enter")
    page.wait_for_load_state("load")
    assert "No customers match" in page.content()
    assert page.problems == []


def test_report_opens_offline_and_draws(demo_db: Path, page: Any, tmp_path: Path) -> None:
    # the running server holds the store's write lock: report from a copy
    copy = tmp_path / "demo.duckdb"
    shutil.copy(demo_db, copy)
    out = tmp_path / "report.html"
    done = retain("report", "--db", str(copy), "--out", str(out))
    assert done.returncode == 0, done.stderr
    # nothing outside the file may be fetched
    page.route("http*://**", lambda route: route.abort())
    page.goto(out.as_uri())
    page.wait_for_load_state("load")
    check_charts(
        page,
        [
            "clv-distribution",
            "cohort-heatmap",
            "segment-treemap",
            "rfm-grid",
            *PAGES["models"][1],
            *PAGES["model-health"][1],
        ],
    )
    shoot(page, "report")
    assert page.problems == []


def test_api_docs_render_offline(server: str, page: Any) -> None:
    # chromium gets nothing but what the service serves: as on a machine with no internet
    elsewhere: list[str] = []

    def only_the_service(route: Any) -> None:
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    response = page.goto(server + "/docs")
    assert response is not None and response.status == 200
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    assert operations >= 12, operations  # one per /api route
    assert "/api/customers/{customer_id}" in page.content()
    shoot(page, "api-docs")
    assert elsewhere == []
    assert page.problems == []


# the page's own width against the viewport's, and each table wrapper's
NARROW_JS = """
() => ({
  page: document.documentElement.scrollWidth,
  viewport: window.innerWidth,
  wrappers: Array.from(document.querySelectorAll('.table-wrap')).map(w => ({
    width: w.getBoundingClientRect().width, scrolls: w.scrollWidth > w.clientWidth,
    overflow: getComputedStyle(w).overflowX})),
})
"""


@pytest.mark.parametrize(
    "path", ["/customers", "/at-risk", "/segments", "/model-health", "/customers/TOP"]
)
def test_a_phone_wide_page_scrolls_its_tables_not_itself(
    server: str, browser: Any, path: str
) -> None:
    if path.endswith("/TOP"):  # the biggest spender: the longest order history
        with urllib.request.urlopen(server + "/api/customers?sort=net_revenue&limit=1") as r:
            path = "/customers/" + json.loads(r.read())["customers"][0]["customer_id"]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        tab = context.new_page()
        response = tab.goto(server + path)
        assert response is not None and response.status == 200
        tab.wait_for_load_state("load")
        seen = tab.evaluate(NARROW_JS)
        assert seen["page"] <= seen["viewport"], seen  # nothing sticks out to the right
        assert seen["wrappers"], seen
        for wrapper in seen["wrappers"]:
            assert wrapper["width"] <= seen["viewport"] and wrapper["overflow"] == "auto"
        assert any(w["scrolls"] for w in seen["wrappers"]), seen  # the table scrolls inside
        tab.screenshot(path=str(ARTIFACTS / f"narrow{path.replace('/', '-')}.png"), full_page=True)
    finally:
        context.close()


EXPERIMENT = """
[defaults]
sender = "Shop <shop@example.com>"
unsubscribe_url = "http://127.0.0.1:8765/unsubscribe"
outbox_dir = "OUTBOX"

[[campaign]]
name = "news"
trigger = { kind = "broadcast", at = "2025-07-01T09:00:00" }
channel = "file"
control_share = 0.3

[[campaign.variants]]
name = "plain"
subject = "News"
text = "New this week. Unsubscribe: {{ unsubscribe_url }}"

[[campaign.variants]]
name = "offer"
subject = "10% off this week"
text = "10% off. Unsubscribe: {{ unsubscribe_url }}"
"""


def test_the_campaigns_page_shows_an_experiment(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A newsletter with two variants and a control, 900 customers; after it the offer's
    customers buy twice as often. The Campaigns page's Experiments section shows the
    arms, the uplift with its interval and the sentence, as the API says them, and its
    table scrolls on a phone."""
    import numpy as np
    import pandas as pd

    from campaign_helpers import people_store, person
    from retain.campaigns import run_campaigns
    from retain.campaigns.definitions import parse_campaigns
    from retain.store import Store
    from store_helpers import insert_frames

    folder = tmp_path_factory.mktemp("experiment")
    db = people_store(folder / "s.duckdb", [person(f"c{i:04d}") for i in range(900)])
    text = EXPERIMENT.replace("OUTBOX", str(folder / "outbox"))
    with Store(db) as store:
        run_campaigns(store, parse_campaigns(text), now="2025-07-01T10:00:00")
        arms = store.con.execute(
            "SELECT customer_id, coalesce(variant, status) FROM campaign_outbox"
        ).fetchall()
        rng = np.random.default_rng(3)
        rows = [
            (f"w-{cid}", cid, pd.Timestamp("2025-07-03 12:00"), 25.0)
            for cid, arm in arms
            if rng.random() < (0.4 if arm == "offer" else 0.2)
        ]
        frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "net_revenue"])
        insert_frames(store, {"orders": frame})
    with serving(db) as base:
        with urllib.request.urlopen(base + "/api/campaigns") as response:
            (shown,) = json.loads(response.read())["experiments"]
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        try:
            tab = context.new_page()
            problems: list[str] = []
            tab.on("pageerror", lambda error: problems.append(str(error)))
            assert tab.goto(base + "/campaigns").status == 200
            section = tab.locator("h2", has_text="Experiments")
            assert section.is_visible()
            assert tab.locator(".experiment-sentence").inner_text() == shown["sentence"]
            cells = [
                [c.strip() for c in row.split("\t")]
                for row in tab.locator("table.experiment-arms tbody tr").all_inner_texts()
            ]
            assert [row[0] for row in cells] == [a["arm"] for a in shown["arms"]]
            assert cells[0][1] == f"{shown['arms'][0]['customers']:,}"
            offer = next(c for c in shown["comparisons"] if c["arm"] == "offer")
            low, high = offer["conversion"]["sequential_interval"]
            uplift = next(row for row in cells if row[0] == "offer")[6]
            assert uplift.startswith(f"{100 * offer['conversion']['difference']:+.1f} ")
            assert f"({100 * low:+.1f} to {100 * high:+.1f})" in uplift
            assert uplift.endswith(offer["conversion"]["verdict"])
            shoot(tab, "campaigns-experiment")
            assert problems == []
        finally:
            context.close()
        context = browser.new_context(viewport={"width": 390, "height": 844})
        try:
            tab = context.new_page()
            tab.goto(base + "/campaigns")
            seen = tab.evaluate(NARROW_JS)
            assert seen["page"] <= seen["viewport"], seen
            assert any(w["scrolls"] for w in seen["wrappers"]), seen
        finally:
            context.close()


def test_the_whatif_sliders_redraw_the_projection(server: str, page: Any) -> None:
    """Moving the dropout lever to -30% asks /api/whatif and shows its answer: the
    scenario's revenue total and the chart's scenario line are the API's for that lever,
    and the page's address keeps the levers (a reload shows the same)."""
    page.goto(server + "/whatif?months=24")
    page.wait_for_load_state("load")
    before = page.locator("tr[data-total=revenue_total] [data-side=scenario]").inner_text()
    page.locator("input[name=dropout_change]").fill("-0.3")
    page.wait_for_function("document.getElementById('whatif-form').dataset.shown")
    with urllib.request.urlopen(
        server + "/api/whatif?months=24&dropout_change=-0.3&purchase_rate_change=0&spend_change=0"
    ) as response:
        expected = json.loads(response.read())
    shown = page.locator("tr[data-total=revenue_total] [data-side=scenario]").inner_text()
    assert float(shown.replace(",", "")) == expected["scenario"]["revenue_total"]
    assert shown != before
    assert page.locator("output[data-lever=dropout_change]").inner_text() == "-30%"
    line = page.evaluate(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=whatif-revenue]'))"
        ".data.datasets[1].data"
    )
    assert line == expected["scenario"]["revenue"]
    assert "dropout_change=-0.3" in page.url
    assert page.locator("#whatif-error").is_hidden()
    # a lever the API refuses (a dropout beyond what the fit can say, or beyond 10 for a
    # rate): the page says the API's words, and the next good move clears them
    page.evaluate("() => document.querySelector('input[name=dropout_change]').max = '20'")
    page.locator("input[name=dropout_change]").fill("15")
    page.wait_for_function("document.getElementById('whatif-form').dataset.error")
    said = page.locator("#whatif-error").inner_text()
    assert page.locator("#whatif-error").is_visible() and "dropout" in said, said
    page.locator("input[name=dropout_change]").fill("-0.2")
    page.wait_for_function("!document.getElementById('whatif-form').dataset.error")
    assert page.locator("#whatif-error").is_hidden()
    # a campaign: its three numbers priced as the API prices them, shown in its cards
    assert page.locator("#whatif-campaign").is_hidden()
    page.locator("input[name=campaign_reach]").fill("0.3")
    page.locator("input[name=campaign_cost]").fill("0.5")
    shown_before = page.evaluate("() => document.getElementById('whatif-form').dataset.shown")
    page.locator("input[name=campaign_dropout_change]").fill("-0.2")
    page.wait_for_function(
        f"document.getElementById('whatif-form').dataset.shown > {shown_before} && "
        "!document.getElementById('whatif-campaign').hidden"
    )
    with urllib.request.urlopen(
        server + "/api/whatif?months=24&dropout_change=-0.2&purchase_rate_change=0&spend_change=0"
        "&campaign_reach=0.3&campaign_cost=0.5&campaign_dropout_change=-0.2"
    ) as response:
        full = json.loads(response.read())
    priced = full["campaign"]
    added = page.locator("#whatif-campaign [data-field=value_added]").inner_text()
    assert float(added.replace(",", "")) == priced["value_added"]
    verdict = page.locator("#whatif-campaign [data-field=verdict]").inner_text()
    assert verdict == ("it pays" if priced["pays"] else "it does not pay")
    active = page.evaluate(
        "() => Chart.getChart(document.querySelector('canvas[data-chart=whatif-active]'))"
        ".data.datasets[1].data"
    )
    assert active == full["scenario"]["active"]
    row = page.locator("tr[data-total=active_at_end] [data-side=scenario]").inner_text()
    assert int(row.replace(",", "")) == round(full["scenario"]["active_at_end"])
    # a reload keeps the campaign and shows it from the server
    page.reload()
    page.wait_for_load_state("load")
    assert page.locator("#whatif-campaign").is_visible()
    assert page.locator("input[name=campaign_reach]").input_value() == "0.3"
    page.problems[:] = [p for p in page.problems if "422" not in p]
    assert page.problems == []


def test_the_subscriptions_page_draws_what_the_api_says(
    tmp_path: Path, cdnow_sample_db: Path, page: Any
) -> None:
    """A store of orders and subscriptions (600 monthly subscribers over a year and a
    half, each leaving after a payment with their own chance): the page's MRR, plans and
    charts (MRR, movements, the plan's tracking) are the API's, and the cohort table
    scrolls at phone width."""
    import datetime as dt

    import numpy as np

    rng = np.random.default_rng(7)
    lines = ["subscription_id,customer_id,plan,price,started_at,cancelled_at"]
    for n in range(600):
        start = dt.date(1997, 1, 1) + dt.timedelta(days=int(rng.integers(0, 540)))
        months = int(rng.geometric(rng.beta(1.0, 2.5)))
        end = start + dt.timedelta(days=round(30.44 * months))
        lines.append(f"s{n},{n + 1},box,25,{start},{end if end <= dt.date(1998, 6, 30) else ''}")
    (tmp_path / "subs.csv").write_text("\n".join(lines) + "\n")
    db = tmp_path / "store.duckdb"
    shutil.copy(cdnow_sample_db, db)
    done = retain("ingest", str(tmp_path / "subs.csv"), "--db", str(db), "--as-of", "1998-06-30")
    assert done.returncode == 0, done.stderr
    with serving(db) as base:
        with urllib.request.urlopen(base + "/api/subscriptions") as response:
            expected = json.loads(response.read())
        page.goto(base + "/subscriptions")
        page.wait_for_load_state("load")
        (plan,) = expected["plans"]
        assert plan["fit"] is not None and plan["tracking"] is not None
        check_charts(
            page, ["subscriptions-mrr", "subscriptions-movements", "subscriptions-tracking-0"]
        )
        shown = page.locator("#mrr-now .value").inner_text()
        assert float(shown.replace(",", "").lstrip("$€£")) == round(expected["mrr_now"], 2)
        row = page.locator("#subscription-plans tr[data-plan=box]")
        assert f"{plan['active']:,}" in row.inner_text()
        assert f"alpha {plan['fit']['alpha']:.3f}" in row.inner_text()
        mrr = page.evaluate(
            "() => Chart.getChart(document.querySelector('canvas[data-chart=subscriptions-mrr]'))"
            ".data.datasets[0].data"
        )
        assert mrr == [m["mrr"] for m in expected["mrr"][-24:]]
        # no order lines nor scores here: who to offer one cannot be said, and the page says why
        assert "retain score" in page.locator("#offers-problem").inner_text()
        assert page.problems == []
        page.set_viewport_size({"width": 390, "height": 800})
        wrap = page.locator("#subscription-cohorts").locator("xpath=..")
        assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")
        shoot(page, "subscriptions")


def test_the_feedback_page_ranks_what_the_api_ranks_and_drills_down(
    tmp_path: Path, page: Any
) -> None:
    """A store whose delivery complainers churn at twice the base rate (the feedback tests'
    simulation, fitted and scored): the page's rows are the API's, in its order, with its
    figures; the chart draws; a topic's link opens its texts and the customers raising it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_feedback_loop import simulated_store

    db = simulated_store(tmp_path, customers=1500)
    for step in (("fit", "--model", "pnbd"), ("score",)):
        done = retain(*step, "--db", str(db))
        assert done.returncode == 0, done.stderr
    with serving(db) as base:
        with urllib.request.urlopen(base + "/api/feedback/pain-points") as response:
            expected = json.loads(response.read())
        page.goto(base + "/feedback")
        page.wait_for_load_state("load")
        check_charts(page, ["pain-value"])
        rows = page.locator("#pain-points tbody tr")
        assert [rows.nth(i).get_attribute("data-topic") for i in range(rows.count())] == [
            r["topic"] for r in expected["topics"]
        ]
        first = expected["topics"][0]
        cells = rows.nth(0).inner_text()
        assert f"{first['mentions']:,}" in cells and f"{first['churn_ratio']:.2f}" in cells
        assert f"${first['value_at_risk']:,.0f}" in cells
        shoot(page, "feedback")
        rows.nth(0).locator("a").click()
        page.wait_for_load_state("load")
        assert page.url.endswith(f"/feedback/{first['topic']}")
        with urllib.request.urlopen(base + f"/api/feedback/pain-points/{first['topic']}") as r:
            drill = json.loads(r.read())
        texts = page.locator("#texts tbody tr")
        assert texts.count() == len(drill["texts"]) > 0
        assert drill["texts"][0]["text"] in texts.nth(0).inner_text()
        raisers = page.locator("#raisers tbody tr")
        assert drill["customers"][0]["customer_id"] in raisers.nth(0).inner_text()
        shoot(page, "pain-point")
        assert page.problems == []
