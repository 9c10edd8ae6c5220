"""An S3 API over real HTTP for the storage tests: moto's server on a free port, the AWS environment aimed at it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from redis import Redis
from werkzeug.serving import make_server

from tests.conftest import stack_env
from tests.helpers import RedisServer, Service, free_port, start_api, start_worker, wait_ready

# Credentials moto accepts; the processes under test read them like any AWS credentials.
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


class MotoServer(ThreadedMotoServer):
    """moto's S3 API in this process. `stop()` closes the listener and every open connection, as a store
    that goes down does (the stock `stop()` leaves both open: keep-alive connections would go on being served).
    Buckets live in moto's process-wide state, so a server restarted on the same port finds them again."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)
        self.live: set[socket.socket] = set()

    @property
    def port(self) -> int:
        """The port it listens on (again after a restart with `MotoServer(port)`)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """The AWS_ENDPOINT_URL of this server."""
        return f"http://127.0.0.1:{self._port}"

    def _server_entry(self) -> None:
        live = self.live

        class Tracked(MotoRequestHandler):  # type: ignore[misc]
            def setup(self) -> None:
                super().setup()
                live.add(self.connection)

            def finish(self) -> None:
                live.discard(self.connection)
                super().finish()

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=Tracked)
        self._server_ready_event.set()
        self._server.serve_forever()

    def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        super().stop()
        if self._server is not None:
            self._server.server_close()
        for connection in list(self.live):
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def client(self) -> Any:
        """A boto3 S3 client of this server: an independent look at what is in the buckets."""
        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_REGION"],
    }


def keys(moto: MotoServer, bucket: str, prefix: str = "") -> list[str]:
    """Every key in a bucket under a prefix, all pages."""
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto S3 server for the session, with the AWS environment of this process pointing at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # an access-log line per request otherwise
    server = MotoServer()
    server.start()
    saved = {name: os.environ.get(name) for name in [*AWS, "AWS_ENDPOINT_URL"]}
    os.environ.update({**AWS, "AWS_ENDPOINT_URL": server.endpoint})
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A new, empty bucket of this test alone."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=name)
    return name


def aws_env(moto: MotoServer) -> dict[str, str]:
    """The environment a process needs to reach the moto server: credentials, region, endpoint."""
    return {**AWS, "AWS_ENDPOINT_URL": moto.endpoint}


@dataclass
class S3Stack:
    """A worker and one API per delivery mode, each in its own empty working directory, sharing only Redis and S3."""

    apis: dict[str, Service]
    worker: Service
    redis: Redis
    prefix: str
    bucket: str
    dirs: list[Path]

    def base(self, api: str) -> str:
        """Base URL of one of the APIs."""
        return f"http://127.0.0.1:{self.apis[api].port}"

    def stop(self) -> None:
        """Stop every process."""
        self.worker.stop()
        for api in self.apis.values():
            api.stop()


def start_s3_stack(
    tmp: Path,
    redis_server: RedisServer,
    moto: MotoServer,
    bucket: str,
    model: Path,
    apis: dict[str, dict[str, str]],
    **extra: str,
) -> S3Stack:
    """Start a tiny-sd worker and the APIs named in `apis` (name -> extra settings) on `s3://bucket/images`.

    No directory is shared: each process runs in a working directory of its own and gets no local
    storage path; `extra` settings go to every process.
    """
    prefix = f"s{uuid.uuid4().hex[:10]}"
    env = {
        **stack_env(redis_server.url, prefix, tmp / "unused", **aws_env(moto), **extra),
        "DIFFUSION_STORAGE_URL": f"s3://{bucket}/images",
    }
    dirs = [tmp / "worker", *(tmp / f"api-{name}" for name in apis)]
    for folder in dirs:
        folder.mkdir(parents=True)
    worker_id = f"{prefix}-sd"
    worker = start_worker(
        model, {**env, "DIFFUSION_WORKER_ID": worker_id}, tmp / "worker.log", name="tiny-sd", cwd=tmp / "worker"
    )
    started: dict[str, Service] = {}
    redis = Redis.from_url(redis_server.url)
    try:
        for name, settings in apis.items():
            started[name] = start_api({**env, **settings}, tmp / f"api-{name}.log", cwd=tmp / f"api-{name}")
        wait_ready(worker, redis, f"{prefix}.generate.tiny-sd", worker_id)
    except BaseException:
        worker.stop()
        for api in started.values():
            api.stop()
        raise
    return S3Stack(started, worker, redis, prefix, bucket, dirs)


def local_files(stack: S3Stack) -> list[Path]:
    """Every file a process of the stack wrote into its working directory (there should be none)."""
    return [path for folder in stack.dirs for path in folder.rglob("*") if path.is_file()]
