"""Signed, expiring image URLs: HMAC-SHA256 over the storage key and the expiry time."""

from __future__ import annotations

import hashlib
import hmac
import time


class UrlSigner:
    """Signs with one secret; verifies with it and the secrets of earlier rotations (`previous`)."""

    def __init__(self, secret: bytes, ttl_seconds: int, previous: tuple[bytes, ...] = ()) -> None:
        self._secret = secret
        self._previous = previous
        self.ttl_seconds = ttl_seconds

    def _digest(self, key: str, expires: int, secret: bytes | None = None) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(secret or self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, key: str, not_after: float | None = None) -> tuple[int, str]:
        """Expiry and signature for a key; never later than `not_after` (the image's own deletion)."""
        expires = int(time.time()) + self.ttl_seconds
        if not_after is not None:
            expires = min(expires, int(not_after))
        return expires, self._digest(key, expires)

    def verify(self, key: str, expires: int, signature: str) -> str | None:
        """None when valid, else the reason it is refused."""
        secrets = (self._secret, *self._previous)
        if not any(hmac.compare_digest(self._digest(key, expires, secret), signature) for secret in secrets):
            return "the URL signature is not valid"
        if expires < time.time():
            return "the URL has expired; fetch the job again for a fresh one"
        return None
