"""`/v1/images/...`: image bytes behind signed, expiring URLs."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.deps import SignerDep, StorageDep
from app.errors import Forbidden, NotFound, responses
from contract.storage import InvalidKey, content_type_of, is_output

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.get(
    "/{job_id}/{name}",
    response_class=FileResponse,
    responses={
        **responses(Forbidden, NotFound),
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "The image bytes."},
    },
)
def get_image(
    job_id: str,
    name: str,
    signer: SignerDep,
    storage: StorageDep,
    expires: int = Query(default=0),
    sig: str = Query(default="", max_length=128),
) -> FileResponse:
    """An output image; the URL comes signed in the job object and stops working when it expires."""
    key = f"{job_id}/{name}"
    try:
        path = storage.path(key)  # shape check first: nothing else reaches the filesystem
        content_type = content_type_of(key)
    except InvalidKey:
        raise NotFound("no such image", "name") from None
    if not is_output(key):
        raise NotFound("no such image", "name")
    reason = signer.verify(key, expires, sig) if sig else "the URL is not signed"
    if reason:
        raise Forbidden(reason, "sig")
    if not path.is_file():
        raise NotFound("the image no longer exists (past its retention)", "name")
    return FileResponse(path, media_type=content_type, headers={"Cache-Control": "private, max-age=3600"})
