"""`/v1/images/...`: image bytes behind signed, expiring URLs."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from app.deps import SettingsDep, SignerDep, StorageDep
from app.errors import Forbidden, NotFound, ServiceUnavailable, responses
from contract.storage import InvalidKey, ObjectMissing, StorageError, content_type_of, is_output

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.get(
    "/{job_id}/{name}",
    response_class=Response,
    responses={
        **responses(Forbidden, NotFound, ServiceUnavailable),
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "The image bytes."},
        307: {"description": "`DIFFUSION_IMAGE_DELIVERY=redirect`: to a short-lived presigned URL of the store."},
    },
)
async def get_image(
    job_id: str,
    name: str,
    signer: SignerDep,
    storage: StorageDep,
    settings: SettingsDep,
    expires: int = Query(default=0),
    sig: str = Query(default="", max_length=128),
) -> Response:
    """An output image; the URL comes signed in the job object and stops working when it expires."""
    key = f"{job_id}/{name}"
    try:
        content_type = content_type_of(key)  # shape check first: nothing else reaches the store
    except InvalidKey:
        raise NotFound("no such image", "name") from None
    if not is_output(key):
        raise NotFound("no such image", "name")
    reason = signer.verify(key, expires, sig) if sig else "the URL is not signed"
    if reason:
        raise Forbidden(reason, "sig")
    try:
        if settings.image_delivery == "redirect":
            # Never past the API URL's own expiry; the store answers from here on.
            until = min(expires, int(time.time()) + settings.image_redirect_ttl_seconds)
            direct = await run_in_threadpool(storage.url, key, until)
            if direct is not None:
                return RedirectResponse(direct, status_code=307, headers={"Cache-Control": "no-store"})
        data = await run_in_threadpool(storage.get, key)
    except ObjectMissing:
        raise NotFound("the image no longer exists (past its retention)", "name") from None
    except StorageError:
        raise ServiceUnavailable(
            "the image store is unreachable; retry shortly", headers={"Retry-After": "5"}
        ) from None
    return Response(data, media_type=content_type, headers={"Cache-Control": "private, max-age=3600"})
