"""Background server script: `python server/run_server.py [server/ibstream.toml]`.

Reads an optional TOML config (see server/ibstream.example.toml), then runs the same server
as `ibstream serve`. Suited to a systemd unit (server/ibstream.service) or nohup.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from ibstream.cli import main


def args_from_config(path: Path) -> list[str]:
    config = tomllib.loads(path.read_text())
    args = ["serve"]
    for key in ("host", "port", "ib_host", "ib_port", "client_id", "ib_lib"):
        if key in config:
            args += [f"--{key.replace('_', '-')}", str(config[key])]
    if config.get("demo"):
        args.append("--demo")
    return args


if __name__ == "__main__":
    argv = args_from_config(Path(sys.argv[1])) if len(sys.argv) > 1 else ["serve"]
    sys.exit(main(argv))
