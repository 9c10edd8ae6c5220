"""The browser playground (`/playground`) and the landing page (`/`): static files served by the API itself.

No build step and nothing from another origin: a content security policy allows scripts, styles and
connections to this origin only (images may also come from a storage host, whose signed URLs the
API hands out). The page calls the public REST API like any other client.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from app.deps import SettingsDep
from app.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static" / "playground"
# Only these names are served: a request can never reach another file.
ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "form.js": "text/javascript",
    "images.js": "text/javascript",
    "results.js": "text/javascript",
    "style.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/", response_class=HTMLResponse)
def landing() -> HTMLResponse:
    """Landing page: links to the playground, the API reference and the OpenAPI schema."""
    return HTMLResponse((STATIC / "landing.html").read_text(encoding="utf-8"), headers=SECURITY_HEADERS)


@router.get("/playground", response_class=HTMLResponse)
def playground(settings: SettingsDep) -> HTMLResponse:
    """The playground page, with the service's request limits embedded for the form."""
    limits = {
        "default_model": settings.default_model,
        "max_prompt_chars": settings.max_prompt_chars,
        "min_image_side": settings.min_image_side,
        "max_image_side": settings.max_image_side,
        "max_image_pixels": settings.max_image_pixels,
        "max_inference_steps": settings.max_inference_steps,
        "max_images_per_request": settings.max_images_per_request,
        "max_guidance_scale": settings.max_guidance_scale,
        "max_loras_per_request": settings.max_loras_per_request,
        "max_body_bytes": settings.max_body_bytes,
    }
    # JSON inside <script type="application/json">: escape "<" so no value can close the element.
    data = json.dumps(limits).replace("<", "\\u003c")
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("__LIMITS__", data)
    return HTMLResponse(page, headers=SECURITY_HEADERS)


@router.get("/playground/{name}")
def asset(name: str) -> FileResponse:
    """A script or stylesheet of the playground."""
    if name not in ASSETS:
        raise NotFound(f"no playground file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=SECURITY_HEADERS)
