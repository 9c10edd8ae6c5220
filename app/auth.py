"""API keys: who is calling, what they may see, and their limits.

A key is `dsk_<id>_<secret>`. Redis (shared by every API replica, so a new or revoked key counts
everywhere at once) keeps, per key name, its id, the SHA-256 of its secret, whether it is an admin
and its quotas; never the key. A request's `Authorization: Bearer <key>` is looked up by id and its
secret compared with `hmac.compare_digest` on the hashes. Logs and metrics name the key's name only.

With auth off (`DIFFUSION_AUTH=off`, or `auto` on a loopback address) every caller is the anonymous
admin and jobs have no owner, as on a single-tenant install.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass

from pydantic import BaseModel, Field
from redis import Redis

from app.errors import Unauthorized
from contract.keys import api_key_ids_key, api_keys_key

KEY_PREFIX = "dsk_"
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class KeyRecord(BaseModel):
    """What is stored of an API key: no key, only the hash of its secret."""

    name: str = Field(pattern=NAME_PATTERN)
    id: str
    secret_sha256: str
    admin: bool = False
    requests_per_minute: int | None = Field(default=None, ge=0, description="None: the service's default.")
    max_active_jobs: int | None = Field(default=None, ge=0, description="None: the service's default.")
    created_at: float


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a key's name (None when auth is off), whether it sees every job, its quotas."""

    name: str | None
    admin: bool
    requests_per_minute: int = 0  # 0: unlimited
    max_active_jobs: int = 0

    @property
    def owner(self) -> str | None:
        """The owner the caller's new jobs get, and whose jobs it sees (None: every job)."""
        return None if self.admin and self.name is None else self.name

    def may_see(self, owner: str | None) -> bool:
        """Whether a job with this owner exists for this caller (others' jobs answer 404, not 403)."""
        return self.admin or owner == self.name


ANONYMOUS = Caller(name=None, admin=True)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """API keys in Redis: create, list, revoke, and look up a presented key."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def create(
        self, name: str, admin: bool = False, requests_per_minute: int | None = None, max_active_jobs: int | None = None
    ) -> str:
        """A new key for `name` (unique); returns the key, which is not stored and cannot be shown again."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = KeyRecord(
            name=name,
            id=key_id,
            secret_sha256=_digest(secret),
            admin=admin,
            requests_per_minute=requests_per_minute,
            max_active_jobs=max_active_jobs,
            created_at=time.time(),
        )
        if not self.redis.hsetnx(api_keys_key(self.prefix), name, record.model_dump_json()):
            raise ValueError(f"an API key named {name!r} exists; revoke it first or pick another name")
        self.redis.hset(api_key_ids_key(self.prefix), key_id, name)
        return f"{KEY_PREFIX}{key_id}_{secret}"

    def list(self) -> list[KeyRecord]:
        """Every key's record, by name."""
        raw = self.redis.hgetall(api_keys_key(self.prefix))
        return sorted((KeyRecord.model_validate_json(v) for v in raw.values()), key=lambda r: r.name)

    def revoke(self, name: str) -> bool:
        """Remove a key; requests with it fail from the next one on. False when there is no such key."""
        raw = self.redis.hget(api_keys_key(self.prefix), name)
        if raw is None:
            return False
        record = KeyRecord.model_validate_json(raw)
        with self.redis.pipeline() as pipe:
            pipe.hdel(api_keys_key(self.prefix), name)
            pipe.hdel(api_key_ids_key(self.prefix), record.id)
            pipe.execute()
        return True

    def lookup(self, presented: str) -> KeyRecord | None:
        """The record of a presented key, or None when it is malformed, unknown or revoked."""
        key_id, _, secret = presented.removeprefix(KEY_PREFIX).partition("_")
        if not presented.startswith(KEY_PREFIX) or not key_id or not secret:
            return None
        name = self.redis.hget(api_key_ids_key(self.prefix), key_id)
        raw = None if name is None else self.redis.hget(api_keys_key(self.prefix), name)
        if raw is None:
            return None
        record = KeyRecord.model_validate_json(raw)
        return record if hmac.compare_digest(record.secret_sha256, _digest(secret)) else None


def bearer(header: str | None) -> str:
    """The key of an `Authorization: Bearer <key>` header; Unauthorized when there is none."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    return value.strip()


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def caller_of(record: KeyRecord, default_rpm: int, default_active: int) -> Caller:
    """A key's record as a caller, its unset quotas taken from the service's defaults."""
    rpm = default_rpm if record.requests_per_minute is None else record.requests_per_minute
    active = default_active if record.max_active_jobs is None else record.max_active_jobs
    return Caller(name=record.name, admin=record.admin, requests_per_minute=rpm, max_active_jobs=active)


def describe(record: KeyRecord) -> str:
    """One line about a key for `python -m app.keys list` (never the key)."""
    limits = {"rpm": record.requests_per_minute, "active": record.max_active_jobs}
    shown = json.dumps({k: ("default" if v is None else v) for k, v in limits.items()})
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created_at))
    return f"{record.name}\t{'admin' if record.admin else 'user'}\t{shown}\tcreated {created}\tid {record.id}"
