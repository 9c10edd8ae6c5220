"""Server-side request forgery guard for webhook URLs: http(s) only, no credentials, public addresses only."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit


class WebhookRefused(ValueError):
    """A webhook URL that may not be called (scheme, unresolvable, or a non-public address)."""


def check_url(url: str, allowed_networks: list[str]) -> list[str]:
    """The addresses the URL's host resolves to, all public (or allowed); refuses non-http(s) URLs and hosts
    resolving to any loopback, private, link-local or metadata address."""
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
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        addresses.append(str(address))
        if any(address in network for network in allowed):
            continue
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(f"webhook_url resolves to a non-public address ({address}); refused")
    return list(dict.fromkeys(addresses))


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The request that reaches `address` (one the check passed) for `url`: the URL with the host replaced by
    the address, the Host header, and httpx's `sni_hostname` extension (TLS still verifies the name).

    Connecting to the checked address, not resolving the name again, closes the DNS-rebinding gap: a name
    that answered a public address to the check cannot answer a private one to the connection."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    original = parts.hostname or ""
    host_header = original if parts.port is None else f"{original}:{parts.port}"
    return target, {"Host": host_header}, {"sni_hostname": original}
