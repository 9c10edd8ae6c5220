"""HTTP front end: accepts generation jobs, queues them in Redis/RQ, serves status and images.

Never imports torch, diffusers or `worker`: the API image stays small and starts in a second.
"""
