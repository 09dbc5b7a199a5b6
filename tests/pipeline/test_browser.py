"""`crispml ui` in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

The UI is MLflow's React app, so every check waits for content to appear rather than for
the page to load. Pages are reached by URL, as a user would bookmark them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from servers_util import CRISPML, HOST, PLAIN_PATH, clean_env, free_port, running

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")


@dataclass(frozen=True)
class UI:
    """A running `crispml ui` and the runs it shows."""

    url: str
    base: str
    experiment_id: str
    parent_id: str
    children: dict[str, str]
    artifacts: tuple[str, ...]


def _artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> list[str]:
    paths = []
    for info in client.list_artifacts(run_id, folder):
        paths += _artifact_paths(client, run_id, info.path) if info.is_dir else [info.path]
    return paths


@pytest.fixture(scope="module")
def ui(penguins_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """`crispml ui` on the penguins run's store, started with a PATH that lacks the venv's bin/."""
    client = MlflowClient(penguins_run.tracking_uri)
    experiment = client.get_experiment_by_name(penguins_run.result.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent_id = penguins_run.result.run_id
    children = {r.info.run_name: r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert len(children) == 7
    tmp = tmp_path_factory.mktemp("ui")
    port = free_port()
    command = [CRISPML, "ui", "--port", str(port), "--tracking-uri", penguins_run.tracking_uri,
               "--experiment", penguins_run.result.experiment]
    with running(command, tmp / "logs", "ui", cwd=tmp, env=clean_env(PATH=PLAIN_PATH)) as server:
        url = server.first_line()
        base = f"http://{HOST}:{port}/"
        assert url == f"{base}#/experiments/{experiment.experiment_id}/runs"
        server.wait_http(f"{base}health")
        yield UI(url, base, experiment.experiment_id, parent_id, children, tuple(_artifact_paths(client, parent_id)))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium; Playwright downloads no browser."""
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def _close_assistant(page) -> None:
    # MLflow 3 opens an "MLflow Assistant" side panel. Close it, if it is there, so that the
    # screenshot shows the runs; this is cosmetic and never fails a test.
    from playwright.sync_api import Error as PlaywrightError

    panel = page.get_by_text("Ask questions about your experiments")
    close = page.get_by_role("button", name="Close", exact=True)
    try:
        if panel.count() and close.count() == 1:
            close.click()
            panel.first.wait_for(state="hidden", timeout=5_000)
    except PlaywrightError:
        pass


def _decoded_pngs(frame) -> int:
    """How many PNG plots an HTML artifact holds inside it (data URIs), each checked to decode to a real image."""
    images = frame.locator('img[src^="data:image/png"]')
    for i in range(images.count()):
        images.nth(i).evaluate("img => img.decode()")  # raises if the image cannot be decoded
        assert images.nth(i).evaluate("img => img.naturalWidth") > 100
    return images.count()


def _run_link(page, experiment_id: str, run_id: str):
    return page.locator(f'a[href="#/experiments/{experiment_id}/runs/{run_id}"]')


def test_runs_page_lists_the_parent_and_every_candidate(ui: UI, page, tmp_path: Path) -> None:
    page.goto(ui.url)
    parent = _run_link(page, ui.experiment_id, ui.parent_id)
    parent.first.wait_for(timeout=WAIT_MS)
    assert parent.count() == 1
    # Candidates are nested under the parent run: open its group with the button in its row.
    page.locator('[role="gridcell"]', has=parent).locator("button").first.click()
    for name, run_id in ui.children.items():
        link = _run_link(page, ui.experiment_id, run_id)
        link.wait_for(timeout=WAIT_MS)
        assert link.inner_text().strip() == name
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-runs.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the runs page: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_leaderboard_artifact_opens(ui: UI, page, tmp_path: Path) -> None:
    assert "leaderboard.csv" in ui.artifacts
    page.goto(f"{ui.base}#/experiments/{ui.experiment_id}/runs/{ui.parent_id}/artifacts/leaderboard.csv")
    # The preview renders the CSV as a table: its header and a row per candidate.
    page.get_by_text("balanced_accuracy_mean", exact=True).first.wait_for(timeout=WAIT_MS)
    for name in ui.children:
        assert page.get_by_text(name, exact=True).count() >= 1, name
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-leaderboard.png"
    page.screenshot(path=str(screenshot))
    print(f"\nscreenshot of the leaderboard artifact: {screenshot}")


def test_a_plot_artifact_opens(ui: UI, page, tmp_path: Path) -> None:
    images = [p for p in ui.artifacts if p.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        pytest.skip(f"the parent run has no image artifact yet (plots are not logged yet); artifacts: {ui.artifacts}")
    page.goto(f"{ui.base}#/experiments/{ui.experiment_id}/runs/{ui.parent_id}/artifacts/{images[0]}")
    # The image preview loads the file into a blob: URL; a decoded image has a width.
    image = page.locator('img[src^="blob:"]').first
    image.wait_for(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT_MS)
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-plot.png"
    page.screenshot(path=str(screenshot))
    print(f"\nscreenshot of {images[0]}: {screenshot}")


def test_the_data_understanding_page_shows_its_plots_in_the_artifact_viewer(ui: UI, page, tmp_path: Path) -> None:
    page.goto(f"{ui.base}#/experiments/{ui.experiment_id}/runs/{ui.parent_id}/artifacts/understanding/profile.html")
    # MLflow shows an HTML artifact in an iframe; the page's plots are inside it (data URIs), so they load.
    frame = page.frame_locator("iframe").first
    frame.locator("h1").first.wait_for(timeout=WAIT_MS)
    assert _decoded_pngs(frame) == 2
    assert frame.locator("table").count() >= 1
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-profile.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of understanding/profile.html: {screenshot}")


def test_a_parent_run_page_names_what_it_chose_and_says_why(ui: UI, penguins_run, page, tmp_path: Path) -> None:
    result = penguins_run.result
    page.goto(f"{ui.base}#/experiments/{ui.experiment_id}/runs/{ui.parent_id}")
    page.get_by_text("Chosen:", exact=False).first.wait_for(timeout=WAIT_MS)  # the run's description
    title = page.get_by_role("heading").filter(has_text=result.selection.chosen).first
    title.wait_for(timeout=WAIT_MS)
    heading = title.inner_text()
    # The name a person tells runs apart by: the chosen model, its holdout score, the decision.
    score = result.evaluation.holdout[result.evaluation.metric]
    assert heading.startswith(f"{result.selection.chosen} {score:.4f} go "), heading
    assert page.get_by_text(f"Holdout {result.evaluation.metric}:", exact=False).count() >= 1
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-parent-run.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the parent run: {screenshot}")


def test_the_registered_model_page_shows_its_description_and_the_champion(ui: UI, penguins_run, page, tmp_path: Path) -> None:
    name = penguins_run.result.experiment
    page.goto(f"{ui.base}#/models/{name}")
    page.get_by_text("crispml models that predict", exact=False).first.wait_for(timeout=WAIT_MS)
    page.get_by_text("@ champion", exact=False).first.wait_for(timeout=WAIT_MS)  # the alias on its version's row
    assert page.get_by_text("Chosen:", exact=False).count() >= 1  # the version's own description
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-registered-model.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the registered model: {screenshot}")


def test_the_model_card_shows_its_plots_in_the_artifact_viewer(ui: UI, page, tmp_path: Path) -> None:
    page.goto(f"{ui.base}#/experiments/{ui.experiment_id}/runs/{ui.parent_id}/artifacts/model_card.html")
    frame = page.frame_locator("iframe").first
    frame.get_by_text("How the model was chosen").first.wait_for(timeout=WAIT_MS)
    assert _decoded_pngs(frame) >= 4  # the CV box plot, importance, the confusion matrix, the ROC curves...
    _close_assistant(page)
    screenshot = tmp_path / "mlflow-ui-model-card.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of model_card.html: {screenshot}")
