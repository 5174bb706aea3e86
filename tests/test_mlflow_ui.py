"""MLflow's own UI, in a real browser (headless Debian Chromium driven by Playwright), on a real
`mlflow server` holding a tiny sweep, its report and one exported model (all made by the `recsys`
command): the links `recsys report` prints open the runs table (not the GenAI overview) with the
comparison columns, the Dataset and Models columns filled, and the parent run's Pareto figure,
listed and loaded in the artifact view.

Skips, saying why, where Chromium or Playwright is missing (`.ci/run` installs both). With
RECSYS_SCREENSHOTS=DIR the screenshots are kept there (the README's come from this test).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main
from tests.mlflow_server import running_mlflow_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
GENAI_OVERVIEW = ("Token Usage", "Detect Issues")
"""Text of MLflow's GenAI overview: what the page must not show."""
GENAI_SIDEBAR = ("Evaluation runs", "Agent versions")


def browser():
    """A started Playwright and a headless Chromium, or a skip naming what is missing."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the [test] extra: make install)")
    playwright = sync_playwright().start()
    return playwright, playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)


def tiny_sweep(directory: Path, cache_path: Path, server: str, capsys) -> tuple[str, str]:
    """`recsys sweep` and `recsys report` of two configurations, one child exported by run id: the
    links report printed (comparison, Pareto plot) and the exported run's id."""
    path = directory / "tiny.toml"
    path.write_text(
        f"""
name = "tiny"
[data]
prepared = "{cache_path}"
[grid]
models = ["dlrm"]
strategies = ["full", "hashing"]
compressions = [10]
seeds = [0]
[train]
batch_size = 4096
checkpoint_dir = "{directory / "checkpoints"}"
[models.dlrm]
bottom_mlp = [8]
top_mlp = [8]
"""
    )
    store = ["--tracking-uri", server]
    assert main(["sweep", str(path), *store, "--cache-dir", str(directory / "caches")]) == 0
    assert main(["report", str(path), *store, "--output", str(directory / "results")]) == 0
    printed = capsys.readouterr().out
    links = dict(line.rsplit(": ", 1) for line in printed.splitlines() if f": {server}/#/" in line)
    client = MlflowClient(server)
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    exported = client.search_runs([experiment_id], "tags.strategy = 'hashing'")[0].info.run_id
    assert main(["export", exported, "-o", str(directory / "model"), *store]) == 0
    capsys.readouterr()
    return links, exported


def column(page, name: str) -> list[str]:
    cells = page.locator(f'[role=gridcell][col-id="{name}"]')
    return [cells.nth(index).inner_text().strip() for index in range(cells.count())]


def test_the_printed_link_opens_the_comparison_and_the_parent_shows_its_pareto_plot(synthetic_cache, tmp_path, capsys):
    playwright, chromium = browser()
    screenshots = Path(os.environ.get("RECSYS_SCREENSHOTS", tmp_path))
    try:
        with running_mlflow_server(tmp_path) as server:
            links, exported = tiny_sweep(tmp_path, synthetic_cache.path, server, capsys)
            (comparison,) = [link for name, link in links.items() if name.startswith("runs side by side")]
            (pareto,) = [link for name, link in links.items() if name.startswith("Pareto plot")]
            assert pareto.endswith("report/pareto_dlrm.png?workflowType=machine_learning")
            page = chromium.new_page(viewport={"width": 2400, "height": 500})
            page.goto(comparison)
            page.locator('[col-id="attributes.`Run Name`"][role=columnheader]').wait_for(timeout=60_000)
            page.locator('[role=gridcell][col-id="tags.`strategy`"]').first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            close_assistant(page)  # then the grid draws every column (it draws only those in view)
            assert not any(marker in text for marker in GENAI_OVERVIEW), "the GenAI overview opened"
            assert "/runs" in page.url and "memory against AUC (recsys)" in text
            assert sorted(column(page, "tags.`strategy`")) == ["-", "full", "hashing"]  # the parent has none
            assert sorted(column(page, "tags.`budget`")) == ["-", "10x", "full"]
            aucs = [float(value) for value in column(page, "metrics.`test/auc`") if value not in ("", "-")]
            assert len(aucs) == 2 and aucs == sorted(aucs, reverse=True)  # best first
            assert sum(value not in ("", "-") for value in column(page, "metrics.`table/total_bytes`")) == 2
            datasets = column(page, "attributes.`Dataset`")
            assert len(datasets) == 3 and all("criteo (" in value and "Training" in value for value in datasets)
            names = [cell.splitlines()[-1] for cell in column(page, "attributes.`Run Name`")]  # after its colour
            models = dict(zip(names, column(page, "attributes.`Models`")))
            assert models["dlrm/hashing-10x/seed0"] == "model" and models["dlrm/full/seed0"] == "-"
            assert MlflowClient(server).get_run(exported).info.run_name == "dlrm/hashing-10x/seed0"
            page.screenshot(path=str(screenshots / "mlflow_runs.png"))

            page.set_viewport_size({"width": 1400, "height": 700})
            page.goto(pareto)
            figure = page.locator("img[src^=blob]").first
            figure.wait_for(timeout=60_000)
            listed = page.inner_text("body")
            assert "pareto_dlrm.png" in listed and "results_table.json" in listed and "results.md" in listed
            assert not any(marker in listed for marker in GENAI_SIDEBAR), "the page opened in GenAI mode"
            assert figure.evaluate("image => image.complete && image.naturalWidth") > 500  # decoded, full size
            close_assistant(page)
            page.screenshot(path=str(screenshots / "mlflow_pareto.png"))
    finally:
        chromium.close()
        playwright.stop()


def close_assistant(page) -> None:
    """Close MLflow's assistant panel where it opened (it covers the right of the table)."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
        page.wait_for_timeout(500)
