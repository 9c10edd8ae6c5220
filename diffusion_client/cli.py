"""The `diffusion` command: generate, models, get, cancel, replay.

Results go to stdout (`--json` for scripts); progress and errors to stderr: a progress bar on a
terminal, plain lines otherwise. Errors are one line, never a traceback. Exit codes: 0 done, 1 the
job failed or was canceled, 2 bad command line, 3 the service answered an error, 4 the service could
not be reached or a timeout passed, 5 a local file could not be read or written, 70 anything else
(a bug: the one line names it), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

from diffusion_client.client import DiffusionClient
from diffusion_client.display import describe, display_for
from diffusion_client.errors import APIConnectionError, APIError, DiffusionError
from diffusion_client.resources import GenerationParams, Job, Lora

EXIT_OK, EXIT_JOB, EXIT_USAGE, EXIT_API, EXIT_CONNECTION, EXIT_FILE = 0, 1, 2, 3, 4, 5
EXIT_BUG, EXIT_INTERRUPTED = 70, 130
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def _params(args: argparse.Namespace) -> GenerationParams:
    params: dict[str, Any] = {
        "negative_prompt": args.negative_prompt,
        "width": args.width,
        "height": args.height,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "num_images": args.num_images,
        "model": args.model,
        "scheduler": args.scheduler,
        "priority": args.priority,
        "strength": args.strength,
        "output_format": args.format,
        "init_image": Path(args.init_image).read_bytes() if args.init_image else None,
        "mask_image": Path(args.mask_image).read_bytes() if args.mask_image else None,
        "loras": [_lora(text) for text in args.lora] or None,
    }
    return cast(GenerationParams, {k: v for k, v in params.items() if v is not None})


def _lora(text: str) -> Lora:
    name, _, scale = text.partition(":")
    return Lora(name=name, scale=float(scale)) if scale else Lora(name=name)


def _save(client: DiffusionClient, job: Job, args: argparse.Namespace) -> list[str]:
    """Download every image: to `-o` (numbered when several) or `<id>-<k>.<ext>` in `--output-dir`."""
    paths = []
    for index, image in enumerate(job.images):
        if args.output:
            out = Path(args.output)
            path = out if len(job.images) == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
        else:
            path = Path(args.output_dir) / f"{job.id}-{index}{EXTENSIONS.get(image.content_type, '.png')}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download(image))
        paths.append(str(path))
    return paths


def _follow(client: DiffusionClient, job: Job, args: argparse.Namespace) -> int:
    """Show progress until the job ends, save its images, print the result; the exit code."""
    if args.no_wait:
        _print_job(job, args)
        return EXIT_OK
    display = display_for(sys.stderr, enabled=True)
    display.update(job)
    try:
        for state in client.stream(job.id, timeout=args.timeout):
            display.update(state)
            job = state
    finally:
        display.close()
    paths = _save(client, job, args) if job.status == "succeeded" else []
    if args.json:
        print(json.dumps({**job.raw, "files": paths}, indent=2))
    else:
        for path, image in zip(paths, job.images, strict=True):
            print(f"saved {path} ({image.width}x{image.height}, seed {image.seed})")
    if job.status != "succeeded":
        print(f"error: job {job.id} {describe(job)}", file=sys.stderr)
        return EXIT_JOB
    return EXIT_OK


def _print_job(job: Job, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(job.raw, indent=2))
        return
    print(f"{job.id} {job.status} {describe(job)}")
    for image in job.images:
        print(f"  {image.url}")


def _models(client: DiffusionClient, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        print(json.dumps([m.raw for m in models], indent=2))
        return EXIT_OK
    for m in models:
        size = f"{m.width}x{m.height}" if m.width else "size unknown (no worker yet)"
        steps = f", {m.default_steps} steps" if m.default_steps else ""
        schedulers = f", schedulers {' '.join(m.schedulers)}" if m.schedulers else ""
        loras = f", loras {' '.join(m.loras)}" if m.loras else ""
        print(f"{m.id}: {m.ready_workers} ready, {m.queue_depth} queued, {size}{steps}{schedulers}{loras}")
    return EXIT_OK


def run(client: DiffusionClient, args: argparse.Namespace) -> int:
    """Carry out the parsed command; the exit code."""
    if args.command == "models":
        return _models(client, args)
    if args.command == "generate":
        return _follow(client, client.submit(args.prompt, **_params(args)), args)
    if args.command == "replay":
        return _follow(client, client.replay(args.id), args)
    job = client.cancel(args.id) if args.command == "cancel" else client.get(args.id)
    _print_job(job, args)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="service URL ($DIFFUSION_URL)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key ($DIFFUSION_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    follow = argparse.ArgumentParser(add_help=False)
    where = follow.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="image file (numbered -0, -1, ... when several)")
    where.add_argument("--output-dir", default=".", help="directory for <job id>-<k>.png (default: here)")
    follow.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (600)")
    follow.add_argument("--no-wait", action="store_true", help="print the queued job and exit")

    parser = argparse.ArgumentParser(prog="diffusion", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DIFFUSION_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=None, help="API key (default $DIFFUSION_API_KEY)")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", parents=[common, follow], help="generate images and save them")
    gen.add_argument("prompt")
    gen.add_argument("--negative-prompt")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("-n", "--num-images", type=int)
    gen.add_argument("--model")
    gen.add_argument("--scheduler")
    gen.add_argument("--priority", choices=["high", "normal", "low"])
    gen.add_argument("--init-image", help="image-to-image input (PNG, JPEG or WebP file)")
    gen.add_argument("--strength", type=float)
    gen.add_argument("--mask-image", help="inpainting mask: white is repainted")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME[:SCALE]")
    gen.add_argument("--format", choices=["png", "jpeg", "webp"])
    commands.add_parser("models", parents=[common], help="list the served models")
    commands.add_parser("get", aliases=["status"], parents=[common], help="show a job").add_argument("id")
    commands.add_parser("cancel", parents=[common], help="cancel a queued or running job").add_argument("id")
    replay = commands.add_parser("replay", parents=[common, follow], help="run a job again, same seed")
    replay.add_argument("id")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diffusion` command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "status":
        args.command = "get"
    try:
        with DiffusionClient(args.url, api_key=args.api_key) as client:
            return run(client, args)
    except APIError as exc:
        param = f" (field {exc.param})" if exc.param else ""
        retry = f"; retry after {exc.retry_after:g} s" if exc.retry_after is not None else ""
        print(f"error: {exc.status} {exc.type}: {exc.message}{param}{retry}", file=sys.stderr)
        return EXIT_API
    except APIConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FILE
    except KeyboardInterrupt:
        print("interrupted (the job keeps running; `diffusion cancel ID` stops it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the promise is one line, never a traceback, whatever happens
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
