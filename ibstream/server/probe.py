"""What answers on a port of this machine: an ibstream server (/health), anything at all (IB
Gateway / TWS), or nothing, so that a server can listen there."""

from __future__ import annotations

import contextlib
import errno
import socket

import httpx
import psutil

from ibstream.protocol.loopback import is_loopback_url


def health(url: str, timeout: float = 2.0) -> dict | None:
    """The /health body of an ibstream server at `url`, or None if none answers there."""
    try:
        with httpx.Client(timeout=timeout, trust_env=not is_loopback_url(url)) as http:
            response = http.get(f"{url}/health")
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    # 503: an ibstream server that is up but not connected to IB (degraded)
    is_ibstream = response.status_code in (200, 503) and isinstance(body, dict)
    return body if is_ibstream and "protocol_version" in body else None


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port (IB Gateway / TWS)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port (one line), or None if it could."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"cannot listen on {host}:{port}: {exc}"
            return (
                f"port {port} on {host} is in use by another program{_holder(port)}, not an "
                "ibstream server; pick another port (--port) or stop that program"
            )
    return None


def _holder(port: int) -> str:
    """' (pid N: name)' of a process of this user bound to the port, if one is found."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.pid:
                return f" (pid {conn.pid}: {psutil.Process(conn.pid).name()})"
    return ""
