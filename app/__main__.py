"""`python -m app --host H --port P`: run the API under uvicorn (other settings from the environment)."""

from __future__ import annotations

import argparse

import uvicorn

from app.main import create_app
from app.settings import ApiSettings
from contract.settings import load_settings


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", help="interface to bind (DIFFUSION_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (DIFFUSION_PORT, default 8000)")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(ApiSettings, **overrides)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
