"""The `ibstream` command: gateway, serve, demo, delta (`python -m ibstream.cli` runs it too)."""

from ibstream.cli.main import build_parser, main, serve_settings

__all__ = ["build_parser", "main", "serve_settings"]
