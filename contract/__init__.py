"""What the API and the workers agree on: the job schema, the Redis job record, queue names and image storage.

Importing this package pulls in neither FastAPI nor torch, so both processes can share it.
"""
