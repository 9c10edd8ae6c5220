"""boto3 against obstore as the S3 client of `contract.storage.s3`, measured against a local moto server.

Prints, per library: put and get latency of a 100 KB object (medians and p95 over interleaved
rounds, so a busy minute on a shared VM hits both alike), presigning cost, import time in a fresh
interpreter, installed size, and how long an operation takes to fail once the store is stopped.
`python benchmarks/storage.py [--ops 200] [--rounds 10]`; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import free_port

BUCKET = "bench"
PAYLOAD = os.urandom(100 * 1024)
Op = Callable[[str], None]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def boto3_ops(endpoint: str) -> tuple[Op, Op, Callable[[str], str]]:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    client = boto3.client("s3", endpoint_url=endpoint, config=config)

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=PAYLOAD, ContentType="image/png")

    def get(key: str) -> None:
        assert len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == len(PAYLOAD)

    def sign(key: str) -> str:
        return str(client.generate_presigned_url("get_object", {"Bucket": BUCKET, "Key": key}, ExpiresIn=3600))

    return put, get, sign


def obstore_ops(endpoint: str) -> tuple[Op, Op, Callable[[str], str]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        client_options={"allow_http": True, "connect_timeout": "2s", "timeout": "5s"},
        retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10)},
    )

    def put(key: str) -> None:
        obstore.put(store, key, PAYLOAD, attributes={"Content-Type": "image/png"})

    def get(key: str) -> None:
        assert len(obstore.get(store, key).bytes()) == len(PAYLOAD)

    def sign(key: str) -> str:
        return obstore.sign(store, "GET", key, timedelta(hours=1))

    return put, get, sign


def import_seconds(statement: str, runs: int = 5) -> float:
    """Median wall time of a fresh interpreter running `statement`, minus a bare interpreter's."""

    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    bare = statistics.median(once("pass") for _ in range(runs))
    return statistics.median(once(statement) for _ in range(runs)) - bare


def installed_mib(*distributions: str) -> float:
    total = 0
    for name in distributions:
        for file in metadata.distribution(name).files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def failing_seconds(make: Callable[[str], tuple[Op, Op, Callable[[str], str]]], endpoint: str) -> float:
    put, _, _ = make(endpoint)
    started = time.perf_counter()
    try:
        put("down/x.png")
    except Exception:
        return time.perf_counter() - started
    raise AssertionError("a put to a stopped store succeeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=200, help="puts and gets per library")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the ops are split into")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    libraries = {"boto3": boto3_ops(endpoint), "obstore": obstore_ops(endpoint)}
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    timings: dict[str, dict[str, list[float]]] = {name: {"put": [], "get": [], "sign": []} for name in libraries}
    per_round = args.ops // args.rounds
    for round_ in range(args.rounds):
        order = list(libraries) if round_ % 2 == 0 else list(reversed(libraries))
        for name in order:
            put, get, sign = libraries[name]
            for i in range(per_round):
                key = f"{name}/{round_}-{i}.png"
                for what, op in (("put", put), ("get", get), ("sign", sign)):
                    started = time.perf_counter()
                    op(key)
                    timings[name][what].append(time.perf_counter() - started)
    server.stop()
    down = {name: failing_seconds(make, endpoint) for name, make in (("boto3", boto3_ops), ("obstore", obstore_ops))}
    imports = {
        "boto3": import_seconds("import boto3; boto3.client('s3', region_name='us-east-1')"),
        "obstore": import_seconds(
            "import obstore; from obstore.store import S3Store; S3Store('b', region='us-east-1')"
        ),
    }
    sizes = {
        "boto3": installed_mib("boto3", "botocore", "s3transfer", "jmespath"),
        "obstore": installed_mib("obstore"),
    }
    print(f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{args.ops} puts and gets of {len(PAYLOAD) // 1024} KB per library, {args.rounds} interleaved rounds")
    for name, ops in timings.items():
        cells = [
            f"{what} median {statistics.median(v) * 1000:.2f} ms p95 {pct(v, 0.95) * 1000:.2f} ms"
            for what, v in ops.items()
        ]
        print(
            f"{name:8} {metadata.version(name)}: {'; '.join(cells)}; import {imports[name] * 1000:.0f} ms; "
            f"installed {sizes[name]:.1f} MiB; put to a stopped store fails after {down[name]:.2f} s"
        )


if __name__ == "__main__":
    main()
