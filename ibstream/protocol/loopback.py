"""Is a host or URL this machine? Shared by the server's guard, the probes and the client."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost (with or without brackets)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """A URL (or host:port) that points at this machine: never sent through a proxy."""
    return is_loopback_host(urlsplit(url if "://" in url else f"http://{url}").hostname or "")
