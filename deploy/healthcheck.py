"""Container health check: `python deploy/healthcheck.py api|worker` exits 0 when healthy, 1 with a reason.

Used by the Dockerfile's HEALTHCHECK, docker-compose.yml and the Kubernetes probes. Standard library
only: it runs in either image and starts in ~30 ms.

- api: `GET /healthz` answers 200 (the process serves HTTP; Redis and workers are /readyz's business).
- worker: the worker's metrics endpoint exports a `diffusion_model_info` sample. The metrics server
  starts before the pipeline loads, so an answer alone proves nothing; `diffusion_model_info` is set
  only once the pipeline is loaded and warmed up, right before the worker registers with RQ and takes
  jobs (worker/service.py). So healthy = warm.

Ports and hosts come from the same variables the processes read (DIFFUSION_PORT, DIFFUSION_HOST,
DIFFUSION_METRICS_PORT, DIFFUSION_METRICS_HOST); a wildcard bind address is checked on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0
WARM_SAMPLE = "diffusion_model_info{"


def _host(variable: str, default: str) -> str:
    host = os.environ.get(variable, default)
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        return str(response.read().decode("utf-8", "replace"))


def check_api() -> str | None:
    """None when the API answers /healthz, else why not."""
    url = f"http://{_host('DIFFUSION_HOST', '127.0.0.1')}:{os.environ.get('DIFFUSION_PORT', '8000')}/healthz"
    try:
        _get(url)
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"
    return None


def check_worker() -> str | None:
    """None when the worker's metrics say its pipeline is warm, else why not."""
    port = os.environ.get("DIFFUSION_METRICS_PORT", "9101")
    if port == "0":
        return "DIFFUSION_METRICS_PORT=0: the metrics server is off, so warmth cannot be observed"
    url = f"http://{_host('DIFFUSION_METRICS_HOST', '0.0.0.0')}:{port}/metrics"
    try:
        body = _get(url)
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"
    if not any(line.startswith(WARM_SAMPLE) for line in body.splitlines()):
        return f"{url}: no {WARM_SAMPLE}...}} sample yet: the pipeline is still loading or warming up"
    return None


def main(argv: list[str]) -> int:
    """Run the check named on the command line."""
    checks = {"api": check_api, "worker": check_worker}
    if len(argv) != 1 or argv[0] not in checks:
        print(f"usage: healthcheck.py {'|'.join(checks)}", file=sys.stderr)
        return 2
    problem = checks[argv[0]]()
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
