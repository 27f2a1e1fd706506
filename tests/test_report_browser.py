"""The report end to end in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
every section renders, pictures load, the explorer sorts, filters, selects and exports exactly what
pandas computes from the run's parquet, and nothing is requested from outside the file system.
Full-page screenshots are kept in tests/artifacts/report/ (and in the test's tmp folder).

Inputs: the tiny experiment (tests/data/tiny_experiment.toml, --quick), run once for the module; its
metrics run, noise manifest, random-arm model and clean test split feed all five sections.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
SPEC = Path(__file__).parent / "data" / "tiny_experiment.toml"
ARTIFACTS = Path(__file__).parent / "artifacts" / "report"
SECTIONS = ["overview", "metrics", "explorer", "review", "model", "experiment"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install playwright "
                               "(its own browser download is not needed; the test drives /usr/bin/chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The tiny quick experiment and a report of everything it produced."""
    from qualmet.experiment import run_experiment
    from qualmet.report import build_report

    from qualmet.formats import load_coco
    from qualmet.metric_run import MetricRun
    from qualmet.review import build_review
    from qualmet.review_files import write_review

    exp = tmp_path_factory.mktemp("browser_exp")
    run_experiment(SPEC, out=exp, quick=True, progress=False)
    model = exp / "arms" / "random" / "seed0" / "model"
    noisy = load_coco(exp / "data" / "train_noisy.json")
    review = build_review(noisy, MetricRun.load(exp / "metrics"))
    write_review(review, noisy, exp / "review")
    out = tmp_path_factory.mktemp("browser_report") / "report"
    index = build_report(out, experiment=exp, model=model, review=exp / "review", progress=False)
    return {"index": index, "exp": exp, "objects": pd.read_parquet(exp / "metrics" / "objects.parquet"),
            "frames": pd.read_parquet(exp / "metrics" / "frames.parquet"),
            "info": json.loads((exp / "metrics" / "run.json").read_text()), "issues": review.issues}


@pytest.fixture(scope="module")
def browser(report, tmp_path_factory):
    """A fresh Chromium profile; every request, page error and console error is recorded."""
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1360, "height": 900}, accept_downloads=True)
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def page(browser, report):
    pg = browser.new_page()
    pg.requests, pg.failed, pg.errors = [], [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("requestfailed", lambda r: pg.failed.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    t0 = time.perf_counter()
    pg.goto(report["index"].as_uri(), wait_until="load")
    pg.load_seconds = time.perf_counter() - t0
    return pg


def _scroll_through(pg) -> None:
    """Scroll the whole page so every lazy picture is requested, then back to the top."""
    height = pg.evaluate("document.body.scrollHeight")
    for y in range(0, height + 900, 600):
        pg.evaluate(f"window.scrollTo(0, {y})")
        pg.wait_for_timeout(40)
    pg.wait_for_load_state("load")
    pg.evaluate("window.scrollTo(0, 0)")


def _screenshot(pg, name: str, tmp_path: Path, element: str | None = None) -> None:
    """A full-page screenshot (or one of ``element``), kept in tests/artifacts/report/ and tmp_path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if element is None:
        pg.evaluate("window.scrollTo(0, 0)")  # the sticky bar is drawn where the page is scrolled to
        pg.screenshot(path=str(tmp_path / name), full_page=True)
    else:
        pg.locator(element).screenshot(path=str(tmp_path / name), style=".topbar { visibility: hidden; }")
    shutil.copy(tmp_path / name, ARTIFACTS / name)


def _first_id(pg) -> int:
    return int(pg.locator("#explorer-objects tbody tr").first.get_attribute("data-id"))


def _order(df: pd.DataFrame, metric: str, ascending: bool) -> list[int]:
    """Annotation ids sorted like the explorer: by value, ties by id ascending, missing values last."""
    d = df[["annotation_id", metric]].dropna()
    return d.sort_values([metric, "annotation_id"], ascending=[ascending, True], kind="mergesort")["annotation_id"].tolist()


@pytest.mark.slow
def test_every_section_renders_and_every_picture_loads(page, report, tmp_path):
    for sid in SECTIONS:
        assert page.locator(f"section#{sid} > h2").is_visible(), sid
        assert page.locator(f'.topbar nav a[href="#{sid}"]').is_visible(), sid
    metrics = [m["name"] for m in report["info"]["metrics"]]
    for m in metrics:
        worst = page.locator(f'#m-{m} .gallery[data-metric="{m}"]').first.locator(".thumb")
        assert worst.count() == min(24, report["objects"][m].notna().sum()) and worst.first.is_visible()
    assert page.locator("#model .frames-row figure").count() == 6
    assert page.locator("#experiment table").count() >= 3  # summary, AUROC, AP
    _scroll_through(page)
    # every picture laid out on the page (not inside a closed <details> or below the explorer's scroll box)
    shown = ("Array.from(document.images).filter(i => i.getAttribute('src') && i.getClientRects().length > 0 && "
             "!i.closest('details:not([open])') && !i.closest('.extable-wrap'))")
    page.wait_for_function(f"{shown}.every(i => i.complete)", timeout=30000)
    broken = page.evaluate(f"{shown}.filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'))")
    assert broken == []
    first_row = page.locator("#explorer-objects tbody tr td.t img").first
    first_row.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('#explorer-objects tbody td.t img').naturalWidth > 0")
    loaded = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0).length")
    assert loaded > 40
    _screenshot(page, "report_full.png", tmp_path)
    assert page.errors == []


@pytest.mark.slow
def test_explorer_sorts_by_clicked_metric_and_reverses(page, report):
    objs = report["objects"]
    page.locator("#explorer").scroll_into_view_if_needed()
    for m in [x["name"] for x in report["info"]["metrics"] if x["level"] == "object"]:
        worse = next(x["worse"] for x in report["info"]["metrics"] if x["name"] == m)
        header = page.locator(f'#explorer-objects th[data-key="{m}"]')
        header.click()  # first click: most suspicious first
        assert _first_id(page) == _order(objs, m, ascending=worse == "low")[0], m
        assert header.get_attribute("aria-sort") == ("ascending" if worse == "low" else "descending")
        header.click()  # again: reversed
        assert _first_id(page) == _order(objs, m, ascending=worse != "low")[0], m
        shown = [int(x) for x in page.locator("#explorer-objects tbody tr").evaluate_all(
            "rs => rs.map(r => r.getAttribute('data-id'))")]
        assert shown == _order(objs, m, ascending=worse != "low")[:len(shown)]


@pytest.mark.slow
def test_explorer_filters_by_threshold_like_pandas(page, report):
    objs = report["objects"]
    m = "box_tightness_iou"
    thr = float(objs[m].median())
    page.select_option("#explorer-objects .ex-metric", m)
    assert page.locator("#explorer-objects .ex-op").input_value() == "le"  # worse = low: the suspicious side
    page.fill("#explorer-objects .ex-thr", repr(thr))
    count = page.locator("#explorer-objects .ex-count")
    assert int(count.get_attribute("data-count")) == int((objs[m] <= thr).sum())
    page.select_option("#explorer-objects .ex-op", "ge")
    assert int(count.get_attribute("data-count")) == int((objs[m] >= thr).sum())
    page.click("#explorer-objects .ex-suggest")  # the 1.5x IQR fence on the suspicious side
    q1, q3 = objs[m].quantile([0.25, 0.75])
    fence = float(page.locator("#explorer-objects .ex-thr").input_value())
    assert fence == pytest.approx(q1 - 1.5 * (q3 - q1), rel=1e-5)
    assert int(count.get_attribute("data-count")) == int((objs[m] <= fence).sum())
    page.click("#explorer-objects .ex-clear")
    assert int(count.get_attribute("data-count")) == len(objs)


@pytest.mark.slow
def test_select_rows_and_export_ids(page, report, tmp_path):
    page.locator('#explorer-objects th[data-key="annotation_id"]').click()
    boxes = page.locator("#explorer-objects tbody input.ex-sel")
    picked = []
    for k in (0, 2, 3):
        boxes.nth(k).check()
        picked.append(int(boxes.nth(k).get_attribute("data-id")))
    assert page.locator("#explorer-objects .ex-selcount").get_attribute("data-count") == "3"
    with page.expect_download() as d:
        page.click("#explorer-objects .ex-json")
    got = json.loads(Path(d.value.path()).read_text())
    assert got["level"] == "object" and got["annotation_ids"] == sorted(picked)
    objs = report["objects"].set_index("annotation_id")
    assert got["image_ids"] == sorted({int(objs.loc[i, "image_id"]) for i in picked})
    with page.expect_download() as d:
        page.click("#explorer-objects .ex-csv")
    rows = list(csv.DictReader(Path(d.value.path()).read_text().splitlines()))
    assert [int(r["annotation_id"]) for r in rows] == sorted(picked)
    page.click("#explorer-objects .ex-selnone")
    assert page.locator("#explorer-objects .ex-selcount").get_attribute("data-count") == "0"
    page.click('button[data-tab="tab-frames"]')
    assert page.locator("#explorer-frames").is_visible() and not page.locator("#explorer-objects").is_visible()
    assert int(page.locator("#explorer-frames .ex-count").get_attribute("data-count")) == len(report["frames"])
    page.click('button[data-tab="tab-objects"]')
    page.locator('#explorer-objects th[data-key="box_tightness_iou"]').click()  # most suspicious first
    page.select_option("#explorer-objects .ex-metric", "box_tightness_iou")  # the worst quarter
    page.fill("#explorer-objects .ex-thr", repr(float(report["objects"]["box_tightness_iou"].quantile(0.25))))
    for k in (0, 1):
        page.locator("#explorer-objects tbody input.ex-sel").nth(k).check()
    page.wait_for_function("Array.from(document.querySelectorAll('#explorer-objects td.t img'))"
                           ".slice(0, 8).every(i => i.complete && i.naturalWidth > 0)")
    _screenshot(page, "report_explorer.png", tmp_path, element="#explorer")
    page.click("#explorer-objects .ex-clear")
    page.click("#explorer-objects .ex-selnone")


@pytest.mark.slow
def test_review_queue_filters_by_kind_sorts_and_exports(page, report, tmp_path):
    issues = report["issues"]
    q = "#review-queue"
    page.locator("#review").scroll_into_view_if_needed()
    count = page.locator(f"{q} .ex-count")
    assert int(count.get_attribute("data-count")) == len(issues)
    shown = [int(x) for x in page.locator(f"{q} tbody tr").evaluate_all("rs => rs.map(r => r.getAttribute('data-id'))")]
    assert shown == issues["rank"].tolist()[:len(shown)]  # worst first, as review.csv
    kinds = page.locator(f"{q} .ex-kind option").evaluate_all("os => os.map(o => o.value)")
    assert set(kinds) == {""} | set(issues["kind"])
    kind = issues["kind"].value_counts().index[-1]  # the rarest kind
    page.select_option(f"{q} .ex-kind", kind)
    assert int(count.get_attribute("data-count")) == int((issues["kind"] == kind).sum())
    assert set(page.locator(f"{q} tbody td .badge").all_inner_texts()) == {kind}
    page.select_option(f"{q} .ex-kind", "")
    page.locator(f'{q} th[data-key="score"]').click()  # highest score first
    top = issues.sort_values(["score", "rank"], ascending=[False, True], kind="mergesort")["rank"].iloc[0]
    assert int(page.locator(f"{q} tbody tr").first.get_attribute("data-id")) == int(top)
    boxes = page.locator(f"{q} tbody input.ex-sel")
    picked = [int(boxes.nth(k).get_attribute("data-id")) for k in (0, 1)]
    for k in (0, 1):
        boxes.nth(k).check()
    with page.expect_download() as d:
        page.click(f"{q} .ex-json")
    got = json.loads(Path(d.value.path()).read_text())
    chosen = issues.set_index("rank").loc[sorted(picked)]
    assert got["ranks"] == sorted(picked) and [i["kind"] for i in got["items"]] == chosen["kind"].tolist()
    assert got["annotation_ids"] == sorted({int(a) for a in chosen["annotation_id"].dropna()})
    page.wait_for_function(f"Array.from(document.querySelectorAll('{q} td.t img')).slice(0, 6)"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    _screenshot(page, "report_review.png", tmp_path, element="#review")
    page.click(f"{q} .ex-selnone")


@pytest.mark.slow
def test_lightbox_shows_the_whole_frame(page, report):
    first = page.locator("#metrics .gallery .thumb").first
    first.scroll_into_view_if_needed()
    full = first.get_attribute("data-full")
    first.click()
    box = page.locator("#lightbox")
    assert "open" in box.get_attribute("class") and box.locator("img").get_attribute("src") == full
    page.wait_for_function("document.querySelector('#lightbox img').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert "open" not in box.get_attribute("class")


@pytest.mark.slow
def test_nothing_left_the_file_system(page):
    """Runs last in this module: every request the page made, lazily loaded pictures and downloads included."""
    assert page.requests, "no request recorded"
    outside = [u for u in page.requests if not u.startswith(("file://", "data:", "blob:"))]
    assert outside == []
    assert page.failed == []
    assert page.errors == []
    print(f"\nreport page load: {page.load_seconds:.2f} s, {len(page.requests)} requests, all local")
