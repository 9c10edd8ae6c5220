"""The playground in a real headless Chromium against the real stack on the default `shapes` model.

Set DIFFUSION_SCREENSHOT_DIR=docs to refresh the screenshots in the README.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.judge import judge

pytestmark = pytest.mark.browser
KEY = "pg-test-key"


@pytest.fixture
def page(browser: Any, shapes: str) -> Iterator[Any]:
    """A fresh page on /playground with the models loaded; records every request and script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.goto(f"{shapes}/playground")
    page.wait_for_selector("#model option[value='shapes']", state="attached")
    yield page
    context.close()


def fraction(page: Any) -> float:
    return float(page.eval_on_selector("#progress", "p => p.value"))


def test_generate_follows_progress_and_shows_the_image(page: Any, shapes: str, screenshots: Path) -> None:
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # `change`: stored, and the models are fetched again with it
    page.select_option("#model", "shapes")
    assert "native 64\N{MULTIPLICATION SIGN}64" in page.inner_text("#model-info")
    page.fill("#prompt", "a red circle on a blue background")
    page.fill("#num_inference_steps", "150")
    page.fill("#seed", "3")
    page.click("#generate")

    page.wait_for_function("() => { const v = document.querySelector('#progress').value; return v > 0.1 && v < 0.6; }")
    first = fraction(page)
    page.wait_for_selector("#preview-box:not([hidden])")
    assert "Running. Denoising: step" in page.inner_text("#status")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshots / "playground-running.png"))
    page.wait_for_function(f"() => document.querySelector('#progress').value > {first}")

    image = page.wait_for_selector("#results figure img")
    page.wait_for_function("() => document.querySelector('#results img').complete")
    assert page.inner_text("#status").startswith("Done in")
    assert fraction(page) == 1.0
    assert image.evaluate("img => img.naturalWidth") == 64
    shown = np.asarray(Image.open(io.BytesIO(image.screenshot())).convert("RGB"))
    verdict = judge(shown)
    assert (verdict.fg, verdict.bg) == ("red", "blue"), verdict
    caption = page.inner_text("#results figcaption")
    assert "Seed 3 · 64\N{MULTIPLICATION SIGN}64" in caption and "Download" in caption
    assert (
        page.get_attribute("#results a[download]", "download", timeout=1000)
        == f"{page.inner_text('#job-id')[4:]}-0.png"
    )
    page.click("#results summary")
    assert '"seed": 3' in page.inner_text("#results pre")
    curl, python = page.inner_text("#snippet-curl"), page.inner_text("#snippet-python")
    assert '"prompt": "a red circle on a blue background"' in curl and "Bearer $DIFFUSION_API_KEY" in curl
    assert "client.generate(" in python and "seed=3," in python and "num_inference_steps=150," in python
    page.screenshot(path=str(screenshots / "playground-done.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"
    page.screenshot(path=str(screenshots / "playground-phone.png"), full_page=True)

    downloaded = httpx.get(page.get_attribute("#results a[download]", "href") or "").content
    first_job = page.inner_text("#job-id")
    page.click("#replay")
    page.wait_for_function(
        """old => document.querySelector('#job-id').textContent !== old
                 && document.querySelector('#status').textContent.startsWith('Done')
                 && document.querySelector('#results a[download]')""",
        arg=first_job,
    )
    replayed = httpx.get(page.get_attribute("#results a[download]", "href") or "").content
    assert replayed == downloaded, "replay: same seed, same bytes"

    assert page.evaluate("sessionStorage.getItem('diffusion-api-key')") == KEY
    api_calls = [r for r in page.requests if "/v1/" in r.url and "/v1/images/" not in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {KEY}" for r in api_calls[1:])
    assert all(r.url.startswith(shapes) or r.url.startswith("data:") for r in page.requests), "nothing external"
    assert page.errors == []


def test_queue_position_then_cancel_a_long_running_job(page: Any, shapes: str) -> None:
    # Other steps than the page's job: the two cannot share a batch, so the page's job has to queue.
    blocker = httpx.post(f"{shapes}/v1/generations", json={"prompt": "a long one", "num_inference_steps": 99999})
    page.fill("#prompt", "a green square on a white background")
    page.fill("#num_inference_steps", "100000")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Queued: next in line')")
    httpx.post(f"{shapes}/v1/generations/{blocker.json()['id']}/cancel")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('Denoising: step')")
    job_id = page.inner_text("#job-id").removeprefix("Job ")
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Canceled')")
    assert fraction(page) < 1
    assert httpx.get(f"{shapes}/v1/generations/{job_id}").json()["status"] == "canceled"
    assert page.is_enabled("#generate") and not page.is_enabled("#cancel")
    assert page.errors == []


def test_input_image_and_a_drawn_mask(page: Any, tmp_path: Path) -> None:
    picture = tmp_path / "input.png"
    Image.new("RGB", (64, 64), (30, 70, 220)).save(picture)
    page.click("#image-section summary")
    page.set_input_files("#init_image", str(picture))
    canvas = page.wait_for_selector("#mask-canvas:visible")
    assert page.input_value("#width") == "64" and page.input_value("#height") == "64"
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    page.fill("#prompt", "a yellow circle on a blue background")
    with page.expect_request(lambda r: r.url.endswith("/v1/generations") and r.method == "POST") as sent:
        page.click("#generate")
    body = sent.value.post_data_json
    assert body["init_image"].startswith("data:image/png;base64,")
    assert body["mask_image"].startswith("data:image/png;base64,")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_image"].split(",", 1)[1]))).convert("L"))
    assert mask.shape == (64, 64) and mask[32].max() == 255 and mask[0].max() == 0, "a white stroke across the middle"
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('Done')")
    assert page.is_visible("#results img")
    assert page.errors == []


def test_an_invalid_field_shows_the_api_error_next_to_it(page: Any) -> None:
    page.focus("#prompt")
    page.keyboard.type("a circle")
    page.fill("#width", "100")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")  # keyboard submit
    error = page.wait_for_selector("#width-error:not([hidden])")
    assert "multiple of 8" in error.inner_text() and "422" in error.inner_text()
    assert page.get_attribute("#width", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "width", "focus moves to the field to fix"
    assert page.is_hidden("#form-error")


def test_every_control_has_a_label(page: Any) -> None:
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, canvas')]
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.id)"""
    )
    assert unlabeled == []
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip", "first Tab: skip link"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "visible focus"
