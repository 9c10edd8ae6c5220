"""URL signatures: bound to key and expiry, refused when tampered or expired."""

from __future__ import annotations

import time

from app.signing import UrlSigner


def test_round_trip_and_tampering() -> None:
    signer = UrlSigner(b"k", 60)
    expires, sig = signer.sign("a/0.png")
    assert signer.verify("a/0.png", expires, sig) is None
    assert signer.verify("a/1.png", expires, sig) is not None
    assert signer.verify("a/0.png", expires + 1, sig) is not None
    assert UrlSigner(b"other", 60).verify("a/0.png", expires, sig) is not None


def test_expiry_is_capped_by_retention() -> None:
    signer = UrlSigner(b"k", 3600)
    not_after = time.time() + 10
    expires, _ = signer.sign("a/0.png", not_after=not_after)
    assert expires <= not_after
    past, sig = signer.sign("a/0.png", not_after=time.time() - 5)
    assert "expired" in (signer.verify("a/0.png", past, sig) or "")


def test_rotated_secrets_keep_verifying_what_they_signed() -> None:
    old, new = UrlSigner(b"old-secret", 60), UrlSigner(b"new-secret", 60, previous=(b"old-secret",))
    expires, signature = old.sign("k")
    assert new.verify("k", expires, signature) is None, "signed before the rotation, still valid"
    expires, signature = new.sign("k")
    assert new.verify("k", expires, signature) is None
    assert old.verify("k", expires, signature) == "the URL signature is not valid", "the new secret signs now"
    assert UrlSigner(b"new-secret", 60).verify("k", *old.sign("k")) == "the URL signature is not valid"
