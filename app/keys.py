"""`python -m app.keys create|list|revoke`: manage API keys in the service's Redis (REDIS_URL, as everywhere).

    python -m app.keys create --name acme [--admin] [--requests-per-minute 120] [--max-active-jobs 20]
    python -m app.keys list
    python -m app.keys revoke acme

`create` prints the new key alone on the last line of its output, once: only a hash of it is kept.
"""

from __future__ import annotations

import argparse
import re
import sys

from redis import Redis
from redis.exceptions import RedisError

from app.auth import NAME_PATTERN, KeyStore, describe
from app.settings import ApiSettings
from contract.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="unique name; logs and metrics show it, never the key")
    create.add_argument("--admin", action="store_true", help="sees and manages every caller's jobs, reads /metrics")
    create.add_argument("--requests-per-minute", type=int, help="job-creating requests; default: the service's")
    create.add_argument("--max-active-jobs", type=int, help="jobs queued or running at once; default: the service's")
    commands.add_parser("list", help="every key's name, role, limits and creation time (never the key)")
    commands.add_parser("revoke", help="revoke a key: its next request gets 401").add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 done, 1 refused, 2 usage or Redis unreachable)."""
    args = _parser().parse_args(argv)
    settings = load_settings(ApiSettings)
    store = KeyStore(
        Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_seconds), settings.key_prefix
    )
    try:
        if args.command == "create":
            if not re.match(NAME_PATTERN, args.name):
                print(f"error: --name must match {NAME_PATTERN}", file=sys.stderr)
                return 2
            limits = (args.requests_per_minute, args.max_active_jobs)
            if any(value is not None and value < 0 for value in limits):
                print("error: limits must be 0 (no limit) or more", file=sys.stderr)
                return 2
            key = store.create(args.name, args.admin, *limits)
            print(f"created {'admin' if args.admin else 'user'} key {args.name!r}; it is shown once, keep it:")
            print(key)
        elif args.command == "list":
            for record in store.list():
                print(describe(record))
        elif not store.revoke(args.name):
            print(f"error: no API key named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.name!r}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"error: Redis at {settings.redis_url.split('@')[-1]} is unreachable: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
