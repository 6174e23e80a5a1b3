"""End to end: `dagster dev` serves the code location and a real headless Chromium shows the asset
graph, every asset inside its group. The screenshot goes to the test artifacts folder in CI
($RECSYS_TEST_ARTIFACTS, default test-artifacts/) and, with RECSYS_UPDATE_SCREENSHOT=1, to
docs/asset-graph.png.

Needs Debian's Chromium (`apt-get install -y chromium`) and the `playwright` package (dev extra);
no browser is downloaded.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "asset-graph.png"
VIEWPORT = {"width": 2400, "height": 3000}
SERVER_START_SECONDS = 90
UI_TIMEOUT_MS = 30_000
GROUPS = {
    "ingest": {"raw_movies", "raw_ratings"},
    "features": {"rating_splits", "movie_features", "user_genre_averages", "fitted_scalers"},
    "model": {"trained_model", "accepted_model", "movie_embeddings", "ranking_model", "held_out_ranking_model"},
    "similarity": {"embedding_distance_matrix", "similar_movies"},
    "evaluation": {"model_evaluation"},
    "serving": {"user_recommendations", "release"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dagster_ui(tmp_path):
    """`dagster dev -w workspace.yaml` on a free port, with a temporary DAGSTER_HOME holding the
    repository's dagster.yaml (so the example instance configuration is known to load)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        # A remote source: the source-data sensor skips it, so the daemon launches no run.
        "RECSYS_MOVIELENS": "https://example.invalid/ml-latest-small.zip",
        "RECSYS_DATA_DIR": str(tmp_path / "data"),
    }
    log = tmp_path / "dagster_dev.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the webserver and daemon stop with it
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"dagster dev exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"dagster dev did not answer within {SERVER_START_SECONDS}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def shown_as(label: str, name: str) -> bool:
    """Whether a node label shows `name`, whole or middle-truncated ("embedding_…_matrix")."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail)


def contains(box: dict, point: tuple[float, float]) -> bool:
    return box["x"] <= point[0] <= box["x"] + box["width"] and box["y"] <= point[1] <= box["y"] + box["height"]


def centre(box: dict) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


@pytest.fixture
def sync_playwright():
    """Playwright driving the system Chromium; checked before the server starts, failing loudly."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get update && apt-get install -y chromium` (or set RECSYS_CHROMIUM).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The playwright package is missing: pip install -e '.[dev]' (it drives the system Chromium; no browser download).")
    return sync_playwright


def test_asset_graph_shows_every_asset_in_its_group(sync_playwright, dagster_ui, tmp_path):
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(UI_TIMEOUT_MS)
            # Mark the first-visit newsletter dialog as seen, or it pops up over the graph after a second.
            page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
            page.goto(f"{dagster_ui}/asset-groups")
            page.locator('[class*="GroupNode_"]').first.wait_for()  # the graph is drawn (groups collapsed)
            # Groups start collapsed; the graph's context menu expands them all.
            page.mouse.click(VIEWPORT["width"] // 2, VIEWPORT["height"] - 40, button="right")
            page.get_by_role("menuitem", name="Expand all groups").click()
            asset_labels = page.locator('[class*="AssetNode_assetName"]')
            asset_labels.nth(sum(len(assets) for assets in GROUPS.values()) - 1).wait_for()
            page.wait_for_timeout(500)  # let the layout settle before measuring and the screenshot

            # A group is drawn as a header with its outline right below it, the assets inside the outline.
            headers = page.locator('[class*="ExpandedGroupNode_groupNodeHeaderBox"]')
            outlines = page.locator('[class*="ExpandedGroupNode_groupOutlineBox"]')
            outline_boxes = [outlines.nth(i).bounding_box() for i in range(outlines.count())]
            group_regions = {}
            for i in range(headers.count()):
                header = headers.nth(i).bounding_box()
                bottom = header["y"] + header["height"]
                [outline] = [box for box in outline_boxes if abs(box["x"] - header["x"]) < 2 and abs(box["y"] - bottom) < 2]
                group_regions[headers.nth(i).inner_text().strip()] = {**outline, "y": header["y"], "height": outline["height"] + header["height"]}
            assert set(group_regions) == set(GROUPS)

            nodes = [(asset_labels.nth(i).inner_text().strip(), centre(asset_labels.nth(i).bounding_box())) for i in range(asset_labels.count())]
            for group, assets in GROUPS.items():
                for asset in assets:
                    matches = [point for label, point in nodes if shown_as(label, asset)]
                    assert matches, f"{asset} not shown in the asset graph (labels: {[label for label, _ in nodes]})"
                    assert any(contains(group_regions[group], point) for point in matches), f"{asset} not drawn inside group {group}"
            assert len(nodes) == sum(len(assets) for assets in GROUPS.values())

            screenshot = tmp_path / DOCS_SCREENSHOT.name
            page.screenshot(path=str(screenshot))
            # The committed picture is refreshed on request only, so a test run leaves the tree clean.
            if os.environ.get("RECSYS_UPDATE_SCREENSHOT"):
                shutil.copy(screenshot, DOCS_SCREENSHOT)
            if os.environ.get("CI"):
                artifacts = Path(os.environ.get("RECSYS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
                artifacts.mkdir(parents=True, exist_ok=True)
                shutil.copy(screenshot, artifacts / DOCS_SCREENSHOT.name)
        finally:
            browser.close()
