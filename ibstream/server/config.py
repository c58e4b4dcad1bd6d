"""Options of a background ibstream server, from a TOML file, the environment and the command
line. One table (`ServeOptions`) names every key; precedence is command line > environment
(`IBSTREAM_<KEY>`) > config file > defaults. Unknown keys and wrong types are errors that name
the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import argparse
import difflib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from ibstream.protocol.auth import TOKEN_ENV
from ibstream.server.settings import ServerSettings, parse_clock

_DEFAULTS = ServerSettings()
KINDS: dict[str, type] = {"str": str, "str | None": str, "int": int, "float": float, "bool": bool}
KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A config file, environment variable or option that cannot be used: `where` and `reason`."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _key(default: Any, help: str, *, secret: bool = False, **limits: Any) -> Any:
    return field(default=default, repr=not secret, metadata={"help": help, **limits})


@dataclass(frozen=True)
class ServeOptions:
    """Every option of `ibstream serve`, as config keys (TOML) and IBSTREAM_* variables."""

    host: str = _key(_DEFAULTS.host, "bind address; keep loopback unless auth and TLS sit in front")
    port: int = _key(_DEFAULTS.port, "HTTP and WebSocket port", low=1, high=65535)
    ib_host: str = _key(_DEFAULTS.ib_host, "TWS / IB Gateway host")
    ib_port: int = _key(
        _DEFAULTS.ib_port,
        "TWS / IB Gateway API port (Gateway paper 4002, live 4001; TWS 7497, 7496)",
        low=1,
        high=65535,
    )
    client_id: int = _key(
        _DEFAULTS.client_id, "API client id, unique per client of one TWS / Gateway", low=0
    )
    ib_lib: str = _key("ib_insync", "IB client library", choices=("ib_insync", "ib_async"))
    channel_grace: float = _key(
        _DEFAULTS.channel_grace_seconds,
        "seconds a stream's upstream subscription outlives its last client (0: cancel at once)",
        low=0,
    )
    max_connections_per_ip: int = _key(
        _DEFAULTS.max_connections_per_ip, "connections one client IP may hold at once", low=1
    )
    max_streams_per_connection: int = _key(
        _DEFAULTS.max_streams_per_connection, "streams one connection may open", low=1
    )
    demo: bool = _key(False, "run on the gateway simulator (demo data) instead of IB")
    token: str | None = _key(
        None,
        "shared secret clients send (Authorization: Bearer, or ?token=); required off "
        "loopback; passed to the server through its environment, never its command line",
        secret=True,
    )
    allow_origin: str = _key(
        "",
        "browser page origins allowed in, comma-separated (e.g. http://localhost:8888; "
        "a TOML list works too)",
    )
    log_level: str = _key("info", "server log detail", choices=("info", "debug"))
    record: str | None = _key(
        None, "record every stream into this tick store (a directory or s3://bucket/prefix)"
    )
    record_flush: float = _key(
        _DEFAULTS.record_flush, "seconds between writes of the recording (at most lost)", low=0.01
    )
    record_contract: str = _key(
        "",
        "streams kept open and recorded from start-up, space-separated SPEC[:tick_types] "
        "(e.g. 'ES 265598:last'; a TOML list works too)",
        joiner=" ",
    )
    backfill: bool = _key(
        _DEFAULTS.backfill, "with record: fill the store's gaps from IB's historical ticks"
    )
    backfill_from: str | None = _key(
        None,
        "with record_contract and backfill: fill each kept stream's day from HH:MM (the "
        "exchange's time zone, else UTC) up to its first start that day, once a day",
        parse=parse_clock,
    )
    bus: str | None = _key(
        None, "publish every tick to this NATS JetStream server (nats://HOST:4222)"
    )
    bus_max_age: float = _key(
        _DEFAULTS.bus_max_age, "with bus: seconds the bus keeps a tick", low=1
    )
    bus_max_bytes: int = _key(0, "with bus: the bus stream's size bound (0: unlimited)", low=0)
    bus_replicas: int = _key(
        _DEFAULTS.bus_replicas, "with bus: copies of the stream in a NATS cluster", low=1, high=5
    )
    bus_buffer: int = _key(_DEFAULTS.bus_buffer, "with bus: ticks kept while NATS is away", low=1)
    from_bus: str | None = _key(
        None, "run as an edge: every stream from this NATS bus (nats://HOST:4222), no IB"
    )
    bus_lease: float = _key(
        _DEFAULTS.bus_lease, "with from_bus: seconds a hold on a stream lasts unrenewed", low=1
    )
    bus_catch_up: float = _key(
        _DEFAULTS.bus_catch_up, "with from_bus: seconds of the current run read at start", low=0
    )

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server."""
        return local_url(self.host, self.port)

    def serve_argv(self) -> list[str]:
        """The `ibstream` command line (after the interpreter) that runs this server."""
        argv = ["-vv"] if self.log_level == "debug" else []
        argv += ["serve", "--host", self.host, "--port", str(self.port)]
        argv += ["--ib-host", self.ib_host, "--ib-port", str(self.ib_port)]
        argv += ["--client-id", str(self.client_id), "--ib-lib", self.ib_lib]
        argv += ["--channel-grace", f"{self.channel_grace:g}"]
        argv += ["--max-connections-per-ip", str(self.max_connections_per_ip)]
        argv += ["--max-streams-per-connection", str(self.max_streams_per_connection)]
        for origin in self.origins:
            argv += ["--allow-origin", origin]
        if self.record:
            where = self.record if "://" in self.record else str(Path(self.record).resolve())
            argv += ["--record", where, "--record-flush", f"{self.record_flush:g}"]
        for spec in self.record_contract.split():
            argv += ["--record-contract", spec]
        if not self.backfill:
            argv.append("--no-backfill")
        if self.backfill_from:
            argv += ["--backfill-from", self.backfill_from]
        if self.bus:
            argv += ["--bus", self.bus, "--bus-max-age", f"{self.bus_max_age:g}"]
            argv += ["--bus-replicas", str(self.bus_replicas), "--bus-buffer", str(self.bus_buffer)]
            if self.bus_max_bytes:
                argv += ["--bus-max-bytes", str(self.bus_max_bytes)]
        if self.from_bus:
            argv += ["--from-bus", self.from_bus, "--bus-lease", f"{self.bus_lease:g}"]
            argv += ["--bus-catch-up", f"{self.bus_catch_up:g}"]
        return argv + (["--demo"] if self.demo else [])  # never the token: `ps` shows argv

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.allow_origin.split(",") if o.strip())

    def serve_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` for the server process, carrying the token as $IBSTREAM_TOKEN."""
        env = {k: v for k, v in environ.items() if k != TOKEN_ENV}
        return env | ({TOKEN_ENV: self.token} if self.token else {})


def keys() -> tuple[Field, ...]:
    return fields(ServeOptions)


def kind(key: Field) -> type:
    return KINDS[key.type] if isinstance(key.type, str) else key.type


def env_name(key: Field) -> str:
    return f"IBSTREAM_{key.name.upper()}"


def local_url(host: str, port: int) -> str:
    """http://host:port, with a wildcard bind address replaced by loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def parse_text(key: Field, text: str, where: str) -> Any:
    """A value from text (environment, command line), converted to the key's type."""
    want, word = kind(key), text.strip().lower()
    try:
        if want is bool:
            value: Any = {**dict.fromkeys(TRUE, True), **dict.fromkeys(FALSE, False)}[word]
        else:
            value = want(text.strip()) if want is not str else text
    except (KeyError, ValueError):
        raise ConfigError(where, f"expected {KIND_NAMES[want]}, got {text!r}") from None
    return check(key, value, where)


def check(key: Field, value: Any, where: str) -> Any:
    """`value` if it has the key's type and lies in its range or choices, else ConfigError."""
    want, meta = kind(key), key.metadata
    if want is str and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = meta.get("joiner", ",").join(value)  # allow_origin = ["http://a", "http://b"]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise ConfigError(where, f"expected {KIND_NAMES[want]}, got {_shown(key, value)}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(
            where, f"expected one of {', '.join(meta['choices'])}, got {_shown(key, value)}"
        )
    if want is str and not value.strip():
        raise ConfigError(where, "expected a value, got an empty string")
    if want is float and not math.isfinite(value):
        raise ConfigError(where, f"expected a finite number, got {_shown(key, value)}")
    if "parse" in meta:  # a format of its own (HH:MM): the parser's reason is the message
        try:
            meta["parse"](value)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(where, f"expected a value {span}, got {_shown(key, value)}")
    return value


def _shown(key: Field, value: Any) -> str:
    return repr(value) if key.repr else "(a value not shown: the key is secret)"


def read_config(path: str | Path) -> dict[str, Any]:
    """The keys set in a TOML config file, checked; ConfigError names any unknown key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config {path}", f"cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}", f"not valid TOML ({exc})") from None
    by_name = {key.name: key for key in keys()}
    for name in data:
        if name not in by_name:
            close = difflib.get_close_matches(name, by_name, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(by_name)
            raise ConfigError(f"config {path}", f"unknown key {name!r}{hint}; valid keys: {valid}")
    return {
        name: check(by_name[name], value, f"config {path}: {name}") for name, value in data.items()
    }


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The keys set by IBSTREAM_<KEY> variables (empty ones count as unset), checked."""
    found = {}
    for key in keys():
        text = environ.get(env_name(key), "")
        if text.strip():
            found[key.name] = parse_text(key, text, env_name(key))
    return found


def merged(
    given: Mapping[str, Any], environ: Mapping[str, str], config: str | Path | None = None
) -> dict[str, Any]:
    """The keys set anywhere: `given` (command line, None = unset) > environment > config."""
    values = read_config(config) if config else {}
    values.update(read_env(environ))
    by_name = {key.name: key for key in keys()}
    values.update(
        {
            name: check(by_name[name], value, name)
            for name, value in given.items()
            if value is not None
        }
    )
    return values


def resolve(
    given: Mapping[str, Any], environ: Mapping[str, str], config: str | Path | None = None
) -> ServeOptions:
    """Options with the documented precedence; defaults for every key set nowhere."""
    return ServeOptions(**merged(given, environ, config))


def add_options(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """A `--key-name` option per key (all, or `names`), default None (unset), with help that
    shows the default, the environment variable and the config key."""
    for key in keys():
        if names is not None and key.name not in names:
            continue
        flag = "--" + key.name.replace("_", "-")
        where = f"default: {key.default}; ${env_name(key)}; config key {key.name}"
        help = f"{key.metadata['help']} ({where})"
        if kind(key) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        else:
            choices = key.metadata.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else _metavar(key)
            parser.add_argument(flag, type=_converter(key, flag), metavar=metavar, help=help)


def _converter(key: Field, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse_text(key, text, flag)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    return convert


def _metavar(key: Field) -> str:
    if "parse" in key.metadata:
        return "HH:MM"
    for suffix in ("host", "port", "id"):
        if key.name.endswith(suffix):
            return suffix.upper()
    return "SECONDS" if kind(key) is float else "N"
