"""Why a connection failed, for the one-line start-up error: TLS handshake diagnosis.

When a connection is reset or a TLS handshake fails, :class:`~streamflow.connection.Connection`
asks these helpers for a hint: does the port speak TLS (a ``redis://`` URL to a TLS port),
does the server want or refuse a client certificate. Probes send no command and check no
server certificate; they only read what the server answers a handshake with.
"""

from __future__ import annotations

import ssl

import anyio

__all__ = [
    "chain_text",
    "client_certificate_hint",
    "is_refused",
    "is_tls_error",
    "probe_context",
    "server_alert",
    "speaks_tls",
    "tls_hint",
]


def is_tls_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a TLS/certificate failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        if "[SSL" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_hint(reason: str, url: str) -> str:
    """What to check after a failed TLS handshake, judged from the OpenSSL reason."""
    return client_certificate_hint(reason, url) or (
        "check ssl_ca_certs names the CA that signed the server certificate and "
        "that the URL's host is in that certificate"
    )


def client_certificate_hint(reason: str, url: str) -> str | None:
    """The hint for a TLS alert about the client certificate, or None.

    An alert is sent by the server: ``certificate required`` means it wants a client
    certificate, ``unknown ca`` / ``bad certificate`` that it refused ours. Anything else
    (``certificate verify failed``, a host mismatch) is about the server's certificate.
    """
    text = reason.lower().replace("_", " ")
    if "certificate required" in text:
        return ("the server requires a client certificate: give ssl_certfile (the client "
                "certificate) and ssl_keyfile (its key) in the rediss:// URL")
    if "alert" in text and ("unknown ca" in text or "bad certificate" in text
                            or "certificate unknown" in text) and "ssl_certfile=" in url:
        return ("the server refused the client certificate in ssl_certfile: it must be signed "
                "by a CA the server trusts (its tls-ca-cert-file)")
    return None


def is_refused(exc: BaseException) -> bool:
    """True when nothing listens there (connection refused): no point asking about TLS."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def probe_context(certfile: str | None = None, keyfile: str | None = None) -> ssl.SSLContext:
    """A client TLS context that checks no server certificate (a probe sends no command),
    presenting the client certificate when one is given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


def chain_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 10:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " / ".join(parts).lower()


async def speaks_tls(host: str, port: int, *, within: float) -> bool:
    """Whether the server at host:port completes a TLS handshake or answers it with a TLS
    alert (asked only after a plain ``redis://`` connection was reset)."""
    try:
        with anyio.fail_after(within):
            stream = await anyio.connect_tcp(host, port, ssl_context=probe_context(),
                                             tls_standard_compatible=False)
            await stream.aclose()
        return True
    except ssl.SSLError as exc:
        return "alert" in str(exc).lower()
    except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
        return False


async def server_alert(
    host: str, port: int, *, within: float, certfile: str | None, keyfile: str | None
) -> str:
    """The TLS alert the server at host:port answers a handshake with (the text of the error,
    lower case), or "" when it sends none within ``within`` seconds.

    With TLS 1.3 a server that refuses the client's certificate (or its absence) says so
    in an alert after the handshake; a client whose first command crosses that alert sees
    only a reset. The probe sends nothing, so the alert cannot be lost that way.
    """
    try:
        with anyio.fail_after(within):
            stream = await anyio.connect_tcp(host, port, ssl_context=probe_context(certfile, keyfile),
                                             tls_standard_compatible=False)
            try:
                await stream.receive()
            finally:
                await stream.aclose()
    except TimeoutError:
        return ""  # connected and nothing came: no complaint about the client
    except Exception as exc:
        text = chain_text(exc)
        return text if "alert" in text or "certificate" in text else ""
    return ""
