"""Bad settings stop start-up with a message naming the variable; good ones parse from the environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import ApiSettings
from tests.helpers import ROOT


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:1/2")
    monkeypatch.setenv("DIFFUSION_MAX_INFERENCE_STEPS", "12")
    monkeypatch.setenv("DIFFUSION_SERVED_MODELS", '["a","b"]')
    settings = ApiSettings()
    assert settings.redis_url == "redis://example:1/2"
    assert settings.max_inference_steps == 12
    assert settings.models == ["shapes", "a", "b"]


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("app", "DIFFUSION_MAX_INFERENCE_STEPS", "lots"),
        ("app", "DIFFUSION_MIN_IMAGE_SIDE", "60"),
        ("worker", "DIFFUSION_DEVICE", "tpu"),
        ("worker", "DIFFUSION_WARMUP_SIZES", '["512"]'),
        ("app", "DIFFUSION_IMAGE_DELIVERY", "presigned"),  # local storage serves through the API only
        ("app", "DIFFUSION_STORAGE_URL", "s3://Bad_Bucket/x"),
        ("worker", "DIFFUSION_STORAGE_URL", "gs://bucket"),
    ],
)
def test_bad_setting_stops_start_up_naming_it(module: str, variable: str, value: str) -> None:
    env = {"PATH": "/usr/bin:/bin", variable: value}
    result = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "invalid configuration" in result.stderr
    assert "Traceback" not in result.stderr
    if "SIDE" not in variable:
        assert variable in result.stderr


def test_models_file_fills_worker_settings_below_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from worker.__main__ import settings_for

    models = tmp_path / "models.json"
    models.write_text(json.dumps({"turbo": {"source": "/models/turbo", "max_steps": 4, "default_steps": 2}}))
    monkeypatch.setenv("DIFFUSION_MODELS_FILE", str(models))
    monkeypatch.setenv("DIFFUSION_DEFAULT_STEPS", "3")
    settings = settings_for({"model_name": "turbo"})
    assert settings.model_source == "/models/turbo" and settings.max_steps == 4
    assert settings.default_steps == 3, "the environment wins over the file"
    assert ApiSettings().models == ["shapes", "turbo"]
    models.write_text(json.dumps({"turbo": {"sauce": "typo"}}))
    with pytest.raises(SystemExit):
        settings_for({"model_name": "turbo"})


def test_storage_urls_and_delivery_modes() -> None:
    assert ApiSettings(storage_url="s3://my.bucket-1/a/b", image_delivery="redirect").image_delivery == "redirect"
    assert ApiSettings(storage_url="file:///srv/images").image_delivery == "proxy"
    with pytest.raises(ValueError, match="needs an object store"):
        ApiSettings(storage_url="/srv/images", image_delivery="redirect")
    with pytest.raises(ValueError, match="7 days"):
        ApiSettings(storage_url="s3://bucket", image_delivery="presigned", image_url_ttl_seconds=8 * 86400)
