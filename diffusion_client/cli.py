"""`diffusion generate "a red circle on a blue background" -o out.png`, `diffusion status ID`, `diffusion cancel ID`.

The progress bar follows the job's server-sent events. The service URL comes from --url or
$DIFFUSION_URL (default http://127.0.0.1:8000).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from diffusion_client import ApiError, DiffusionClient, Job


def _bar(job: Job, width: int = 30) -> str:
    done = int(job.progress.fraction * width)
    position = f" #{job.queue_position} in queue" if job.status == "queued" and job.queue_position else ""
    steps = f" step {job.progress.step}/{job.progress.total_steps}" if job.progress.stage == "denoising" else ""
    return f"\r[{'#' * done}{'.' * (width - done)}] {job.progress.fraction:4.0%} {job.progress.stage}{steps}{position}"


def generate(client: DiffusionClient, args: argparse.Namespace) -> int:
    submitted = client.submit(
        args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images=args.num_images,
        model=args.model,
        priority=args.priority,
    )
    print(f"job {submitted.id}", file=sys.stderr)
    job = submitted
    for job in client.stream(submitted.id):
        print(_bar(job).ljust(72), end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if job.status != "succeeded":
        print(f"job {job.status}: {job.error or job.raw.get('cancel_reason')}", file=sys.stderr)
        return 1
    out = Path(args.output)
    for index, image in enumerate(job.images):
        path = out if len(job.images) == 1 else out.with_name(f"{out.stem}-{index}{out.suffix}")
        path.write_bytes(client.download(image))
        print(f"saved {path} ({image.width}x{image.height}, seed {image.seed})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diffusion` command."""
    parser = argparse.ArgumentParser(prog="diffusion", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DIFFUSION_URL", "http://127.0.0.1:8000"))
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate images and save them")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", default="out.png")
    gen.add_argument("--negative-prompt")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("-n", "--num-images", type=int, default=1)
    gen.add_argument("--model")
    gen.add_argument("--priority", choices=["high", "normal", "low"])
    for name in ("status", "cancel"):
        commands.add_parser(name, help=f"{name} of a job").add_argument("id")
    args = parser.parse_args(argv)
    with DiffusionClient(args.url) as client:
        try:
            if args.command == "generate":
                return generate(client, args)
            job = client.get(args.id) if args.command == "status" else client.cancel(args.id)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        progress = job.progress
        print(
            f"{job.id} {job.status} {progress.stage} {progress.fraction:.0%}"
            + "".join(f"\n  {image.url}" for image in job.images)
        )
        return 0


if __name__ == "__main__":
    sys.exit(main())
