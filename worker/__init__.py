"""GPU runtime: one process per device holding a warm diffusers pipeline, taking jobs from its model's queue.

Never imports FastAPI; shares only `contract` with the API.
"""
