"""Server-side request forgery guard for webhook URLs: http(s) only, no credentials, public addresses only."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class WebhookRefused(ValueError):
    """A webhook URL that may not be called (scheme, unresolvable, or a non-public address)."""


def check_url(url: str, allowed_networks: list[str]) -> None:
    """Refuse non-http(s) URLs and hosts that resolve to loopback, private, link-local or metadata addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host")
    if parts.username or parts.password:
        raise WebhookRefused("webhook_url must not carry credentials")
    try:
        infos = socket.getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"webhook_url host {parts.hostname!r} does not resolve") from None
    allowed = [ipaddress.ip_network(n) for n in allowed_networks]
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in network for network in allowed):
            continue
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(f"webhook_url resolves to a non-public address ({address}); refused")
