"""Python client of the diffusion image service: submit, follow, wait, cancel, replay, download; sync and async.

`DiffusionClient` (and `AsyncDiffusionClient`, the same surface awaitable) raise the exceptions of
`diffusion_client.errors`; results are the dataclasses of `diffusion_client.resources`. A full example is
in docs/client.md.
"""

from diffusion_client._core import VERSION as __version__
from diffusion_client.async_client import AsyncDiffusionClient
from diffusion_client.client import DiffusionClient
from diffusion_client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConflictError,
    DiffusionError,
    ForbiddenError,
    InternalServerError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnknownAPIError,
)
from diffusion_client.resources import GenerationParams, Image, Job, JobError, Lora, Model, Progress

ApiError = APIError  # the name of earlier releases

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "ApiError",
    "AsyncDiffusionClient",
    "ConflictError",
    "DiffusionClient",
    "DiffusionError",
    "ForbiddenError",
    "GenerationParams",
    "Image",
    "InternalServerError",
    "InvalidRequestError",
    "Job",
    "JobError",
    "Lora",
    "MethodNotAllowedError",
    "Model",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "Progress",
    "QueueFullError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnknownAPIError",
    "__version__",
]
