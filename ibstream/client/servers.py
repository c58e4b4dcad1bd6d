"""The servers a client may use, in order: `Client(server=["http://a:8001", "http://b:8001"])`.

One server is a list of one. At connect the URLs are tried in order; when a connection is
lost the reconnect supervisor moves to the next URL (wrapping), so a client outlives the
server it was on. Positions are kept across the move: a server of the same instance
(`server_id`, e.g. another edge of one source) resumes them, any other instance voids them
(a `server_restarted` gap per stream, as after a restart).

Several tasks may see one connection fail (SSE: a response per subscription), so a failure
moves on only from the URL that failed (`failed(url)`): a second report of the same loss
does not skip a server.
"""

from __future__ import annotations

from collections.abc import Sequence

from ibstream.client.options import base_url


def check_servers(value: object) -> tuple[str, ...]:
    """The base URLs of `server` (a URL, or a non-empty list / tuple of distinct URLs)."""
    if isinstance(value, str):
        return (_url(value),)
    if not isinstance(value, list | tuple):
        raise TypeError(
            "server must be a URL or a list of URLs, e.g. ['http://a:8001', 'http://b:8001']; "
            f"got {value!r} ({type(value).__name__})"
        )
    if not value:
        raise ValueError("server must name at least one URL; got an empty list")
    urls: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise TypeError(
                f"server must hold URLs as strings; got {item!r} ({type(item).__name__})"
            )
        url = _url(item)
        if url in urls:
            raise ValueError(f"server names {url} twice; give each server once")
        urls.append(url)
    return tuple(urls)


def _url(text: str) -> str:
    try:
        return base_url(text)
    except ValueError:
        raise ValueError(f"server must look like http://127.0.0.1:8001; got {text!r}") from None


class Servers:
    """The client's URLs and the one in use."""

    def __init__(self, urls: Sequence[str], index: int = 0) -> None:
        self.urls = tuple(urls)
        self.index = index % len(self.urls)

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def failed(self, url: str) -> str:
        """`url` was lost or did not answer: the next URL if `url` is the one in use (one
        move per failure however many tasks report it); the URL in use."""
        if url == self.current:
            self.index = (self.index + 1) % len(self.urls)
        return self.current

    def use(self, url: str) -> None:
        self.index = self.urls.index(url)

    def in_order(self) -> list[str]:
        """Every URL once, from the one in use on (wrapping): the order a connect tries."""
        return [*self.urls[self.index :], *self.urls[: self.index]]

    def describe(self) -> str:
        return ", ".join(self.urls)
