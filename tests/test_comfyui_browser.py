"""The pack in ComfyUI's own web UI, in a real browser: headless Chromium (Debian's `chromium`,
driven by Playwright for Python on the system browser; .ci/run installs both).

The `server` fixture (tests/comfyui_server.py) serves ComfyUI with this repository as a node
pack, a tiny SD1.5 checkpoint under the example workflows' checkpoint name and their picture.
The page's own objects are read: `LiteGraph.registered_node_types` and the widgets of a node
the UI creates, `app.loadGraphData` for each template served by the template endpoint,
`app.queuePrompt` and `app.api.getHistory` for a run. A screenshot of a template's graph is
written to the test's folder (and to docs/comfyui_graph.png with
JAX_UNSAMPLER_UPDATE_SCREENSHOT=1).

Skipped without COMFYUI_PATH, or where chromium or playwright is not installed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import pytest
from comfyui_server import PACK_NAME, pack_node_ids, request
from conftest import needs_comfyui
from ui_workflows import example_workflows

pytestmark = needs_comfyui

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOT_TEMPLATE = "upscale_with_iterative_mixing.json"  # the graph shown in docs/
QUEUED_TEMPLATE = "upscale_with_iterative_mixing.json"  # runs on the tiny checkpoint
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UI_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    # No first-run template dialog over the graph.
    request(f"{server.url}/settings/Comfy.TutorialCompleted", True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ui = browser.new_page(viewport={"width": 1600, "height": 900})
            ui.set_default_timeout(UI_TIMEOUT_MS)
            ui.goto(server.url)
            ui.wait_for_function("() => window.app && window.app.graph && window.LiteGraph")
            yield ui
        finally:
            browser.close()


def _widget_inputs(info: dict) -> list[str]:
    """The names of a node's widget inputs (numbers, strings, toggles, combos) from /object_info."""
    names = []
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            kind = spec[0]
            if isinstance(kind, list) or kind in WIDGET_KINDS:
                names.append(name)
    return names


def test_every_node_of_the_pack_is_registered_with_its_widgets(server, page):
    ids = pack_node_ids(server)
    assert "JaxUnsampler_BatchUnsampler" in ids and "JaxUnsampler_InvertedBatchUnsampler" in ids
    registered = page.evaluate("(ids) => ids.filter((id) => id in LiteGraph.registered_node_types)", ids)
    assert registered == ids
    for node_id in ids:
        _, info = request(f"{server.url}/object_info/{node_id}")
        shown = page.evaluate(
            """(id) => {
                const node = LiteGraph.createNode(id);
                return {
                    widgets: (node.widgets || []).map((w) => w.name),
                    inputs: (node.inputs || []).map((i) => i.name),
                    outputs: (node.outputs || []).map((o) => o.type),
                    title: node.title,
                };
            }""",
            node_id,
        )
        expected = _widget_inputs(info[node_id])
        assert [w for w in shown["widgets"] if w in expected] == expected, node_id
        assert shown["outputs"] == list(info[node_id]["output"]), node_id
        assert shown["title"] == info[node_id]["display_name"], node_id


def test_each_template_loads_into_the_graph(server, page):
    names = page.evaluate("async () => (await (await fetch('/workflow_templates')).json())")[PACK_NAME]
    assert sorted(names) == sorted(n.removesuffix(".json") for n in example_workflows())
    for name in names:
        loaded = page.evaluate(
            """async ([pack, name]) => {
                const url = `/api/workflow_templates/${pack}/${name}.json`;
                const workflow = await (await fetch(url)).json();
                await app.loadGraphData(workflow);
                return app.graph._nodes.map((n) => [n.id, n.type]).sort((a, b) => a[0] - b[0]);
            }""",
            [PACK_NAME, name],
        )
        want = sorted([n["id"], n["type"]] for n in example_workflows()[f"{name}.json"]["nodes"])
        assert loaded == want, name


def test_a_template_queued_from_the_ui_shows_its_result_in_the_history(server, page, tmp_path):
    if SCREENSHOT_TEMPLATE in example_workflows():
        _show(page, SCREENSHOT_TEMPLATE)
        shot = tmp_path / "comfyui_graph.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000  # a drawn graph, not a blank page
        if os.environ.get("JAX_UNSAMPLER_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, ROOT / "docs" / "comfyui_graph.png")
    _show(page, QUEUED_TEMPLATE)
    ids = "async () => (await app.api.getHistory(200)).History.map((e) => [e.prompt[1], e])"
    before = {i for i, _ in page.evaluate(ids)}
    page.evaluate("async () => { await app.queuePrompt(0); }")
    deadline = time.monotonic() + 300
    while True:
        new = [e for i, e in page.evaluate(ids) if i not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            break
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(1.0)
    (entry,) = new
    assert entry["status"]["status_str"] == "success", entry["status"]
    prompt = entry["prompt"][2]
    kinds = {v["class_type"] for v in prompt.values()}
    assert {"JaxUnsampler_IterativeMixingKSampler", "LatentUpscaleBy", "SaveImage"} <= kinds
    (save,) = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    (image,) = entry["outputs"][save]["images"]  # the refined picture, in the UI's history
    assert image["filename"].endswith(".png") and image["type"] == "output"


def _show(page, name: str) -> None:
    """Loads a template into the graph and fits the view to it."""
    page.evaluate(
        """async ([pack, name]) => {
            const workflow = await (await fetch(`/api/workflow_templates/${pack}/${name}`)).json();
            await app.loadGraphData(workflow);
            // Fit the view to the nodes: screen = (graph + offset) * scale.
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const n of app.graph._nodes) {
                x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
                x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
            }
            const rect = app.canvas.canvas.getBoundingClientRect();
            const [left, top] = [80, 90];  // the side bar and the tab bar lie over the canvas
            const [w, h] = [rect.width - left - 30, rect.height - top - 30];
            const scale = Math.min(w / (x1 - x0), h / (y1 - y0));
            app.canvas.ds.scale = scale;
            app.canvas.ds.offset = [left / scale - x0, top / scale - y0];
            app.graph.setDirtyCanvas(true, true);
        }""",
        [PACK_NAME, name],
    )
    page.wait_for_timeout(1500)  # the canvas draws on its next frames
