"""Take README's screenshots of MLflow's UI in a real browser: a study's learning curves in the experiment's chart
view, and the analysis report (report.html) in the artifact viewer.

Not part of the suite (nothing imports it, no test runs it): it needs Playwright and a Chromium, which the suite
does not install. On Debian: ``apt install chromium`` and, in any virtual environment, ``pip install playwright``
(its own browser download is not needed: the script drives the system's Chromium). Then, with a tracking server
running on the study's store (``mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000``)::

    python scripts/readme_screenshots.py --url http://127.0.0.1:5000 --study laptop-cosine --out docs

The pages are MLflow's own; the script only opens them, closes the assistant panel, expands the study's run,
filters the charts and waits for them to draw.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

VIEWPORT = {"width": 1500, "height": 950}


def _api(url: str, path: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30) as response:
        return str(json.load(response)["experiment"]["experiment_id"])


def _analysis_run(url: str, experiment_id: str, study: str) -> str:
    found = _api(
        url,
        "runs/search",
        {
            "experiment_ids": [experiment_id],
            "filter": f"tags.`thread_bench.role` = 'analysis' and tags.`thread_bench.study` = '{study}'",
            "order_by": ["attributes.start_time DESC"],
            "max_results": 1,
        },
    )
    runs = found.get("runs") or []
    if not runs:
        raise SystemExit(f"no analysis run of study {study!r}: run the study (or python -m analysis) first")
    return str(runs[0]["info"]["run_id"])  # type: ignore[index]


def _settle(page: Page) -> None:
    page.wait_for_timeout(5000)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()  # the assistant panel, open on a first visit
        page.wait_for_timeout(500)


def learning_curves(page: Page, url: str, experiment_id: str, study: str, out: Path) -> Path:
    search = f"tags.`thread_bench.study` = '{study}' and tags.`thread_bench.role` = 'train'"
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode({'searchFilter': search})}"
              "&compareRunsMode=CHART")  # fmt: skip
    _settle(page)
    study_cell = page.locator("[role=gridcell]", has_text=f"study-{study}").first
    study_cell.locator("button").first.click()  # expand the study's run: its trainings are its children
    page.get_by_placeholder("Search metric charts").fill("^val_loss$")  # a regular expression: that chart alone
    page.wait_for_timeout(3000)
    menu = page.locator("[data-testid=experiment-view-compare-runs-card-menu]").first
    menu.locator("xpath=preceding::button[1]").click()  # the chart's full-screen button, beside its menu
    page.wait_for_timeout(3000)
    path = out / "mlflow_learning_curves.png"
    page.screenshot(path=str(path))
    return path


def report(page: Page, url: str, experiment_id: str, run_id: str, out: Path) -> Path:
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/report/report.html")
    _settle(page)
    page.wait_for_timeout(3000)
    path = out / "mlflow_report.png"
    page.screenshot(path=str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the tracking server's URL")
    parser.add_argument("--experiment", default="thread-density")
    parser.add_argument("--study", required=True, help="the study id (its trainings' tag thread_bench.study)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    experiment_id = _experiment_id(url, args.experiment)
    run_id = _analysis_run(url, experiment_id, args.study)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        _settle(page)
        page.get_by_role("button", name="Model training").click()  # the UI's workflow switch (kept by the browser)
        for path in (
            learning_curves(page, url, experiment_id, args.study, args.out),
            report(page, url, experiment_id, run_id, args.out),
        ):
            print(path)
        browser.close()


if __name__ == "__main__":
    main()
