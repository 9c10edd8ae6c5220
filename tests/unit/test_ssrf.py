"""Webhook address checks and the pinned request (the connection goes to the address that was checked)."""

from __future__ import annotations

import pytest

from app.auth import ANONYMOUS, Caller, is_loopback
from app.ssrf import WebhookRefused, check_url, pinned


@pytest.mark.parametrize(
    ("url", "address", "target", "host"),
    [
        ("https://hooks.example.com/x?a=1", "93.184.216.34", "https://93.184.216.34/x?a=1", "hooks.example.com"),
        ("http://hooks.example.com:8080", "93.184.216.34", "http://93.184.216.34:8080/", "hooks.example.com:8080"),
        ("https://v6.example.com/h", "2606:2800:220:1::1", "https://[2606:2800:220:1::1]/h", "v6.example.com"),
    ],
)
def test_pinned_request_targets_the_checked_address(url: str, address: str, target: str, host: str) -> None:
    pinned_url, headers, extensions = pinned(url, address)
    assert (pinned_url, headers["Host"]) == (target, host)
    assert extensions["sni_hostname"] == url.split("//")[1].split("/")[0].split(":")[0], "TLS verifies the name"


def test_checked_addresses_are_returned_and_private_ones_refused() -> None:
    assert check_url("http://127.0.0.1:9/x", ["127.0.0.0/8"]) == ["127.0.0.1"]
    for url in ("http://127.0.0.1/", "http://169.254.169.254/latest", "http://[::1]/", "http://10.1.2.3/"):
        with pytest.raises(WebhookRefused):
            check_url(url, [])


def test_callers_see_their_own_jobs_admins_all() -> None:
    user, admin = Caller(name="acme", admin=False), Caller(name="ops", admin=True)
    assert user.may_see("acme") and not user.may_see("other") and not user.may_see(None)
    assert admin.may_see("acme") and admin.may_see(None) and ANONYMOUS.may_see("acme")
    assert user.owner == "acme" and admin.owner == "ops" and ANONYMOUS.owner is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False), ("api", False)],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
