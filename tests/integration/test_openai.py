"""The OpenAI-compatible endpoint, called with the official `openai` package, unmodified."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import Stack

STACK_MODELS = ("tiny-sd",)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base}/v1", api_key="unused", max_retries=0)


def test_b64_json_images(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="tiny-sd", prompt="a red circle", n=2, size="64x64", response_format="b64_json"
    )
    assert len(result.data) == 2
    pictures = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in result.data]
    assert all(p.size == (64, 64) and p.format == "PNG" for p in pictures)
    assert result.created > 0


def test_url_images_and_output_format(client: openai.OpenAI, stack: Stack) -> None:
    result = client.images.generate(prompt="a blue square", size="96x64", output_format="jpeg")
    url = result.data[0].url or ""
    response = httpx.get(url)
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (96, 64)


def test_errors_come_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="p", size="100x100")
    assert bad_size.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.images.generate(prompt="p", model="dall-e-3")
    assert bad_model.value.body["param"] == "model"  # type: ignore[index]
    assert bad_model.value.body["type"] == "invalid_request_error"  # type: ignore[index]
