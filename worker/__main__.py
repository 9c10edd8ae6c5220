"""`python -m worker [--model ID_OR_PATH] [--metrics-port P]`: load, warm up, then take jobs.

Other settings come from the environment (README). The worker registers with RQ (and so counts
as ready in the API's /readyz) only after its pipeline is loaded and warm.
"""

from __future__ import annotations

import argparse
import sys

from contract import logs
from contract.settings import load_settings, read_models_file
from worker.settings import WorkerSettings


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    """Command-line overrides of the environment settings."""
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="model_source", help="local diffusers folder or hub id")
    parser.add_argument("--name", dest="model_name", help="model (and queue) name; default DIFFUSION_DEFAULT_MODEL")
    parser.add_argument("--metrics-port", dest="metrics_port", type=int, help="0 disables the metrics server")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty (for batch runs)")
    args = vars(parser.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def settings_for(overrides: dict[str, object]) -> WorkerSettings:
    """Settings from the command line, then the environment, then the model's entry in the models file."""
    settings = load_settings(WorkerSettings, **overrides)
    entry = read_models_file(settings.models_file).get(settings.name)
    if entry is None:
        return settings
    from_file = {("model_source" if k == "source" else k): v for k, v in entry.model_dump(exclude_none=True).items()}
    explicit = {k: getattr(settings, k) for k in settings.model_fields_set}
    return load_settings(WorkerSettings, **{**from_file, **explicit})


def main(argv: list[str] | None = None) -> int:
    """Start a worker; returns the process exit code. Settings are checked before torch is imported."""
    overrides = parse_args(argv)
    burst = bool(overrides.pop("burst", False))
    settings = settings_for(overrides)
    logs.configure(settings.log_format, settings.log_level)
    from worker.process import run

    return run(settings, burst)


if __name__ == "__main__":
    sys.exit(main())
