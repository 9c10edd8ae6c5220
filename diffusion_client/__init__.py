"""Python client of the diffusion image service: submit, get, wait, stream progress, cancel, download."""

from diffusion_client.client import ApiError, DiffusionClient, Image, Job, Progress

__all__ = ["ApiError", "DiffusionClient", "Image", "Job", "Progress"]
