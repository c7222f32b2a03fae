"""Security tests: least-privilege ACL users, TLS, secret redaction, payload limits, names.

Everything runs against private servers: the ``redis_url`` fixture's server (ACL users
are created with its default user and deleted after each test), a ``requirepass``
server, and TLS-enabled redis-server processes with certificates made by ``openssl``
in the test. See docs/security.md for the rules these tests check.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import structlog
from acl_users import AclUsers, url_for

import streamflow
from streamflow import App, ConfigError, Message, PayloadTooLarge, Reject, Retry, Settings, scripts
from streamflow.connection import Connection, redact_url
from streamflow.deadletter import parse_record
from streamflow.embedded import ServerProcess, find_server_binary, free_port, system_redis_binary
from streamflow.errors import ServerUnavailable
from streamflow.logging import configure_logging
from streamflow.permissions import (
    ADMIN_COMMANDS,
    LEASE_COMMANDS,
    PRODUCER_COMMANDS,
    RETENTION_COMMANDS,
    WORKER_COMMANDS,
    PermissionDenied,
    acl_rules,
    check_permissions,
)
from streamflow.policies import Retention
from streamflow.testing import make_worker, running_worker, wait_until, wait_until_blocking

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "security.md"

SECRET = "s3cr3t-Pa55word"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def acl(redis_url: str) -> Iterator[AclUsers]:
    """ACL user factory on the flushed private server (users removed afterwards)."""
    users = AclUsers(redis_url)
    users.admin.execute_command("ACL", "LOG", "RESET")
    try:
        yield users
    finally:
        users.close()


LEASES = "streamflow:consumers:orders:billing"  # consumer-name leases of orders/billing
ORDERS_KEYS = ["orders", "orders:replay:billing", "orders:dlq", LEASES]
WORKER_RULES = acl_rules(WORKER_COMMANDS, ORDERS_KEYS)
PRODUCER_RULES = acl_rules(PRODUCER_COMMANDS, ["orders"])
ADMIN_RULES = acl_rules(ADMIN_COMMANDS, ["orders", "orders:dlq", "orders:replay:*",
                                         "streamflow:consumers:orders:*"])
SELECTOR_WORKER_RULES = [
    *acl_rules([c for c in WORKER_COMMANDS if c not in ("xadd", "eval", *LEASE_COMMANDS)],
               ["orders", "orders:replay:billing"]),
    "(+xadd ~orders:dlq)", f"(+eval ~orders ~orders:replay:billing ~orders:dlq ~{LEASES})",
    f"({' '.join('+' + c for c in LEASE_COMMANDS)} ~{LEASES})",
]


def worker_commands_sent() -> list[list[Any]]:
    """One example of every command form a worker of ``orders``/``billing`` sends."""
    return [
        ["PING"],
        ["XGROUP", "CREATE", "orders", "billing", "$", "MKSTREAM"],
        ["XREADGROUP", "GROUP", "billing", "w1", "COUNT", 10, "BLOCK", 100, "STREAMS", "orders", ">"],
        ["XACK", "orders", "billing", "1-0", "2-0"],
        ["XPENDING", "orders", "billing", "-", "+", 1000, "w1"],
        ["XPENDING", "orders", "billing", "IDLE", 1000, "-", "+", 100, "streamflow:retry"],
        ["XCLAIM", "orders", "billing", "w1", 0, "1-0"],
        ["XCLAIM", "orders", "billing", "streamflow:retry", 0, "1-0", "JUSTID"],
        ["XRANGE", "orders", "1-0", "1-0"],
        ["XINFO", "CONSUMERS", "orders", "billing"],
        ["XGROUP", "DELCONSUMER", "orders", "billing", "w0"],
        ["XADD", "orders:dlq", "*", "dlq:stream", "orders"],
        ["EVAL", scripts.DEAD_LETTER, 2, "orders", "orders:dlq", "billing", "1-0", "a", "b"],
        ["EVAL", scripts.CLAIM_IF_OWNED, 1, "orders", "billing", "w1", "w1", "1-0"],
        ["EVAL", scripts.DELETE_IDLE_CONSUMER, 1, "orders", "billing", "w0", 1000],
        ["MULTI"],
        ["EXEC"],
        ["TIME"],
        ["HGET", LEASES, "w1"],
        ["HSET", LEASES, "w1", "1:ab:{}"],
        ["HDEL", LEASES, "w1"],
        ["HGETALL", LEASES],
        ["EVAL", scripts.NAME_TAKE, 1, LEASES, "w1", "ab", "{}", 15000, ""],
        ["EVAL", scripts.NAME_RENEW, 1, LEASES, "w1", "ab", "{}", 15000],
        ["EVAL", scripts.NAME_RELEASE, 1, LEASES, "w1", "ab"],
    ]


#: Commands no worker, producer or operator of ``orders`` may run.
DESTRUCTIVE = [
    ["XGROUP", "DESTROY", "orders", "billing"],
    ["XGROUP", "SETID", "orders", "billing", "$"],
    ["XDEL", "orders", "1-0"],
    ["DEL", "orders"],
    ["SET", "orders", "x"],
    ["PEXPIRE", "orders", 1],
    ["HSET", "streamflow:consumers:payments:billing", "w1", "1:ab:{}"],
    ["FLUSHALL"],
    ["CONFIG", "GET", "*"],
    ["KEYS", "*"],
    ["XADD", "payments", "*", "a", "b"],
    ["XREADGROUP", "GROUP", "billing", "w1", "STREAMS", "payments", ">"],
]


# -- ACL ----------------------------------------------------------------------------------


def test_documented_acl_rules_allow_exactly_what_each_role_sends(acl: AclUsers) -> None:
    """ACL DRYRUN: the rules in docs/security.md allow every command a role sends and nothing destructive."""
    docs = DOCS.read_text()
    for rules in (WORKER_RULES, PRODUCER_RULES, ADMIN_RULES, SELECTOR_WORKER_RULES):
        assert " ".join(rules) in docs, f"docs/security.md lacks the rule line {' '.join(rules)}"
    assert " ".join(f"+{c}" for c in RETENTION_COMMANDS) in docs
    assert "+@stream" not in " ".join(WORKER_RULES + PRODUCER_RULES + ADMIN_RULES)

    acl.user("sf-worker", WORKER_RULES)
    acl.user("sf-worker-sel", SELECTOR_WORKER_RULES)
    acl.user("sf-producer", PRODUCER_RULES)
    acl.user("sf-admin", ADMIN_RULES)
    acl.user("sf-retention", acl_rules(WORKER_COMMANDS + RETENTION_COMMANDS, ORDERS_KEYS))
    for user in ("sf-worker", "sf-worker-sel"):
        for command in worker_commands_sent():
            assert acl.dryrun(user, *command) == "OK", (user, command)
        for command in [*DESTRUCTIVE, ["XTRIM", "orders", "MINID", "~", "1-0"],
                        ["XAUTOCLAIM", "orders", "billing", "w1", 0, "0-0"]]:
            assert acl.dryrun(user, *command) != "OK", (user, command)
    # The selector form cannot append to the stream it consumes.
    assert acl.dryrun("sf-worker", "XADD", "orders", "*", "a", "b") == "OK"
    assert acl.dryrun("sf-worker-sel", "XADD", "orders", "*", "a", "b") != "OK"
    for command in (["XTRIM", "orders", "MINID", "~", "1-0"], ["XLEN", "orders"],
                    ["XINFO", "GROUPS", "orders"], ["XPENDING", "orders", "billing"]):
        assert acl.dryrun("sf-retention", *command) == "OK", command

    assert acl.dryrun("sf-producer", "XADD", "orders", "*", "sf:json", "1") == "OK"
    assert acl.dryrun("sf-producer", "XADD", "orders", "MAXLEN", "~", 10, "*", "a", "b") == "OK"
    assert acl.dryrun("sf-producer", "PING") == "OK"
    for command in [*DESTRUCTIVE, ["XADD", "orders:dlq", "*", "a", "b"],
                    ["XREADGROUP", "GROUP", "billing", "w1", "STREAMS", "orders", ">"],
                    ["XACK", "orders", "billing", "1-0"], ["XRANGE", "orders", "-", "+"]]:
        assert acl.dryrun("sf-producer", *command) != "OK", command

    for command in (["TIME"], ["INFO", "server"], ["TYPE", "orders"], ["SCAN", 0, "TYPE", "stream"],
                    ["XINFO", "STREAM", "orders"], ["XINFO", "GROUPS", "orders"],
                    ["XINFO", "CONSUMERS", "orders", "billing"], ["XPENDING", "orders", "billing"],
                    ["XLEN", "orders:dlq"], ["XRANGE", "orders:dlq", "-", "+", "COUNT", 100],
                    ["XREVRANGE", "orders:dlq", "+", "-", "COUNT", 1],
                    ["EVAL", scripts.REPLAY, 2, "orders:dlq", "orders", "1-0", "a", "b"],
                    ["HGETALL", LEASES]):
        assert acl.dryrun("sf-admin", *command) == "OK", command
    assert acl.dryrun("sf-admin", "HSET", LEASES, "w1", "1:ab:{}") != "OK"  # reads leases only
    for command in DESTRUCTIVE:
        if command[0] != "XDEL":  # dlq replay deletes replayed records with XDEL
            assert acl.dryrun("sf-admin", *command) != "OK", command


@pytest.mark.anyio
async def test_worker_and_producer_run_end_to_end_under_least_privilege_users(acl: AclUsers) -> None:
    """A worker and a producer with the documented rules publish, handle, retry, renew leases, reclaim,
    prune and dead-letter, and the server logs no ACL denial."""
    admin = acl.admin
    worker_url = acl.user("sf-worker", WORKER_RULES)
    producer_url = acl.user("sf-producer", PRODUCER_RULES)
    # Work left by a worker that died, and an idle consumer to prune.
    admin.xgroup_create("orders", "billing", "$", mkstream=True)
    admin.xadd("orders", {"sf:json": '"orphan"'})
    admin.xreadgroup("billing", "dead-worker", {"orders": ">"})
    admin.execute_command("XGROUP", "CREATECONSUMER", "orders", "billing", "idle-worker")

    multi_before = admin.info("commandstats").get("cmdstat_multi", {}).get("calls", 0)
    app = App()
    seen: dict[str, list[int]] = {}

    @app.handler("orders", group="billing", retry=Retry(max_attempts=2, backoff=0.05, jitter=0))
    async def handle(msg: Message) -> None:
        if "w0" in msg.fields:
            raise Reject("too wide")  # dead-lettered with MULTI/EXEC (too wide for a script)
        payload = msg.payload
        seen.setdefault(payload, []).append(msg.attempt)
        if payload == "flaky" and msg.attempt == 1:
            raise RuntimeError("first attempt fails")
        if payload == "poison":
            raise Reject("cannot be handled")
        if payload == "slow":
            await anyio.sleep(0.8)  # longer than visibility_timeout / 4: leases are renewed

    producer = App(producer_url)
    try:
        async with running_worker(app, worker_url, visibility_timeout=1.0, reclaim_interval=0.2,
                           dead_consumer_after=0.5) as worker:
            for payload in ("ok", "flaky", "poison", "slow"):
                await producer.publish("orders", payload)
            await producer.publish_many("orders", ["batch-1", "batch-2"])
            await producer.publish_fields("orders", {f"w{i}": i for i in range(scripts.MAX_SCRIPT_ARGS // 2)})

            def consumers() -> set[str]:
                return {c["name"] for c in admin.xinfo_consumers("orders", "billing")}

            def done() -> bool:
                return (
                    seen.get("flaky") == [1, 2] and "slow" in seen and "orphan" in seen
                    and "batch-2" in seen and admin.xlen("orders:dlq") == 2
                    and admin.xpending("orders", "billing")["pending"] == 0
                    and not {"dead-worker", "idle-worker"} & consumers()
                )

            await wait_until(done, timeout=15, what="every entry handled, dead-lettered or reclaimed")
            assert worker.stats().dead_lettered == 2
    finally:
        await producer.aclose()
    assert seen["ok"] == [1] and seen["slow"] == [1] and seen["poison"] == [1]
    assert seen["orphan"] == [2]  # reclaimed from the dead worker: second delivery
    records = [parse_record(i, [v for kv in raw.items() for v in kv])
               for i, raw in redis.Redis.from_url(acl.url).xrange("orders:dlq")]
    assert sorted(r.error for r in records) == ["cannot be handled", "too wide"]
    assert max(len(r.original) for r in records) == scripts.MAX_SCRIPT_ARGS
    assert admin.info("commandstats")["cmdstat_multi"]["calls"] > multi_before  # the wide one
    denials = [e for e in admin.execute_command("ACL", "LOG")
               if e.get("username") in {"sf-worker", "sf-producer"}]
    assert denials == [], denials


def test_operator_commands_run_under_the_documented_admin_user(acl: AclUsers) -> None:
    """`streamflow info STREAM`, `dlq list` and `dlq replay` work for a user with the documented
    operator rules, and the server logs no ACL denial."""
    admin = acl.admin
    admin.xgroup_create("orders", "billing", "$", mkstream=True)
    admin.xadd("orders:dlq", {"dlq:stream": "orders", "dlq:id": "1-0", "dlq:group": "billing",
                              "dlq:error_type": "Reject", "f:sf:json": '"replay me"'})
    env = {**os.environ, "STREAMFLOW_REDIS_URL": acl.user("sf-admin", ADMIN_RULES)}
    for args in (["info", "orders"], ["info", "orders", "--json"], ["dlq", "list", "orders"],
                 ["dlq", "replay", "orders", "--all"]):
        out = subprocess.run([sys.executable, "-m", "streamflow", *args], env=env,
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, (args, out.stderr)
        assert "pw-sf-admin" not in out.stdout + out.stderr
    assert admin.xlen("orders:dlq") == 0
    assert admin.xrange("orders") == []  # replayed to billing's replay stream only
    assert [f for _, f in admin.xrange("orders:replay:billing")] == [{"sf:json": '"replay me"'}]
    assert [e for e in admin.execute_command("ACL", "LOG") if e.get("username") == "sf-admin"] == []


MISSING_CASES = [
    pytest.param("xclaim", ORDERS_KEYS, None, "XCLAIM on 'orders' (command not allowed)", id="xclaim"),
    pytest.param("eval", ORDERS_KEYS, None, "EVAL on 'orders, orders:dlq' (command not allowed)",
                 id="eval"),
    pytest.param("xgroup|delconsumer", ORDERS_KEYS, None,
                 "XGROUP DELCONSUMER on 'orders' (command not allowed)", id="delconsumer"),
    pytest.param("xadd", ORDERS_KEYS, None, "XADD on 'orders:dlq' (command not allowed)", id="xadd"),
    pytest.param("multi", ORDERS_KEYS, None, "MULTI (command not allowed)", id="multi"),
    pytest.param(None, ["orders"], None, "XADD on 'orders:dlq' (key not allowed)", id="dlq-key"),
    pytest.param(None, ["orders", "orders:dlq"], None, f"HSET on {LEASES!r} (key not allowed)",
                 id="lease-key"),
    pytest.param("hdel", ORDERS_KEYS, None, f"HDEL on {LEASES!r} (command not allowed)",
                 id="lease-hdel"),
    pytest.param(None, ORDERS_KEYS, Retention(max_len=10), "XTRIM on 'orders' (command not allowed)",
                 id="retention-xtrim"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("removed", "keys", "retention", "expected"), MISSING_CASES)
async def test_worker_lacking_a_permission_fails_at_startup_naming_it(
    acl: AclUsers, removed: str | None, keys: list[str], retention: Retention | None, expected: str
) -> None:
    """A worker whose user lacks one command or key stops before touching anything, with one line naming
    the command and key."""
    url = acl.user("sf-lacking", acl_rules([c for c in WORKER_COMMANDS if c != removed], keys))
    app = App()

    @app.handler("orders", group="billing", retention=retention)
    async def handle(msg: Message) -> None:
        raise AssertionError("never called")

    worker = make_worker(app, url)
    with anyio.fail_after(10), pytest.raises(PermissionDenied) as info:
        await worker.serve()
    message = str(info.value)
    assert isinstance(info.value, ServerUnavailable)
    assert expected in message and "'sf-lacking'" in message and "\n" not in message
    assert "pw-sf-lacking" not in message
    assert not worker.ready.is_set()
    assert acl.admin.exists("orders", "orders:dlq") == 0  # the probes created nothing


def test_cli_worker_lacking_a_permission_exits_with_one_line(acl: AclUsers, tmp_path: Path) -> None:
    """``streamflow run`` under a user without XCLAIM exits 2 with one stderr line naming XCLAIM and the
    key."""
    url = acl.user("sf-noclaim", acl_rules([c for c in WORKER_COMMANDS if c != "xclaim"], ORDERS_KEYS))
    (tmp_path / "aclapp.py").write_text(
        "from streamflow import App\napp = App()\n\n"
        "@app.handler('orders', group='billing')\nasync def handle(msg):\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamflow", "run", "aclapp:app", "--log-format", "json"],
        cwd=tmp_path, env={**os.environ, "STREAMFLOW_REDIS_URL": url},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamflow: error: the Redis user 'sf-noclaim' lacks permissions")
    assert "XCLAIM on 'orders'" in lines[0] and "pw-sf-noclaim" not in lines[0]


@pytest.mark.anyio
async def test_permission_probes_change_nothing(any_redis_url: str) -> None:
    """check_permissions (default user, all rights) passes and creates no key, group or consumer, and moves
    no entry."""
    admin = redis.Redis.from_url(any_redis_url, decode_responses=True)
    admin.xgroup_create("orders", "billing", "$", mkstream=True)
    admin.xadd("orders", {"sf:json": "1"})
    admin.xadd("orders", {"sf:json": "2"})
    admin.xreadgroup("billing", "w-old", {"orders": ">"}, count=1)
    before = (admin.xinfo_groups("orders"), admin.xinfo_consumers("orders", "billing"),
              admin.xrange("orders"), admin.xpending_range("orders", "billing", "-", "+", 10))
    app = App()

    @app.handler("orders", group="billing", retention=Retention(max_len=0))
    async def existing(msg: Message) -> None: ...

    @app.handler("fresh", group="g2", retention=Retention(max_len=0))
    async def fresh(msg: Message) -> None: ...

    conn = Connection(any_redis_url)
    try:
        await check_permissions(await conn.client(), app.handlers, "w-new")
    finally:
        await conn.aclose()
    after = (admin.xinfo_groups("orders"), admin.xinfo_consumers("orders", "billing"),
             admin.xrange("orders"), admin.xpending_range("orders", "billing", "-", "+", 10))
    for b, a in zip(before, after, strict=True):
        for row in (*b, *a):
            if isinstance(row, dict):
                for volatile in ("idle", "inactive", "time_since_delivered"):
                    row.pop(volatile, None)
        assert a == b
    assert admin.exists("orders:dlq", "fresh", "fresh:dlq", LEASES,
                        "streamflow:consumers:fresh:g2") == 0
    admin.close()


# -- TLS ----------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, san: str) -> None:
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
             "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)


class TlsServers:
    """Two TLS redis-servers: one with a cert for 127.0.0.1/localhost, one for another host."""

    def __init__(self, certs: Path, good: ServerProcess, good_port: int,
                 wrong_host: ServerProcess, wrong_host_port: int) -> None:
        self.certs = certs
        self.good, self.good_port = good, good_port
        self.wrong_host, self.wrong_host_port = wrong_host, wrong_host_port

    def url(self, port: int, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"rediss://127.0.0.1:{port}/0" + (f"?{query}" if query else "")


def _start_tls_server(binary: str, certs: Path, leaf: str,
                      auth_clients: str = "optional") -> tuple[ServerProcess, int]:
    tls_port = free_port()
    server = ServerProcess(binary, name="streamflow-test-tls", args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs / f"{leaf}.crt"),
        "--tls-key-file", str(certs / f"{leaf}.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", auth_clients,
    ])
    server.start()
    return server, tls_port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServers]:
    """Self-signed CA, server and client certificates, and TLS-enabled servers using them."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    certs = tmp_path_factory.mktemp("certs")
    _make_ca(certs, "ca")
    _make_ca(certs, "other-ca")
    _make_leaf(certs, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(certs, "elsewhere", "ca", "DNS:elsewhere.example")
    _make_leaf(certs, "client", "ca", "DNS:streamflow-client")
    candidates = [b for b in (system_redis_binary(), find_server_binary("valkey")) if b]
    for binary in dict.fromkeys(candidates):
        try:
            good, good_port = _start_tls_server(binary, certs, "server")
        except Exception:  # built without TLS ("Failed finding TLS support")
            continue
        try:
            wrong, wrong_port = _start_tls_server(binary, certs, "elsewhere")
        except Exception:
            good.stop()
            raise
        try:
            yield TlsServers(certs, good, good_port, wrong, wrong_port)
        finally:
            good.stop()
            wrong.stop()
        return
    pytest.skip("no redis-server/valkey-server here was built with TLS support")


@pytest.mark.anyio
async def test_worker_handles_messages_over_tls(tls: TlsServers) -> None:
    """A worker with CA, client certificate and key, and a producer with the CA only, exchange messages
    over rediss://."""
    c = tls.certs
    worker_url = tls.url(tls.good_port, ssl_ca_certs=str(c / "ca.crt"),
                         ssl_certfile=str(c / "client.crt"), ssl_keyfile=str(c / "client.key"))
    producer = App(tls.url(tls.good_port, ssl_ca_certs=str(c / "ca.crt")))
    app = App()
    got: list[Any] = []

    @app.handler("tls-jobs", group="tls")
    async def handle(msg: Message) -> None:
        got.append(msg.payload)

    try:
        async with running_worker(app, worker_url):
            for i in range(20):
                await producer.publish("tls-jobs", {"n": i})
            await wait_until(lambda: len(got) == 20, timeout=15, what="20 messages over TLS")
    finally:
        await producer.aclose()
    assert sorted(m["n"] for m in got) == list(range(20))
    plain = redis.Redis(port=tls.good.port)
    assert plain.xpending("tls-jobs", "tls")["pending"] == 0
    plain.close()


@pytest.mark.anyio
async def test_tls_with_the_wrong_ca_fails_at_startup(tls: TlsServers) -> None:
    """A CA that did not sign the server certificate stops the worker with a one-line TLS error."""
    app = App()

    @app.handler("tls-jobs", group="tls")
    async def handle(msg: Message) -> None: ...

    url = tls.url(tls.good_port, ssl_ca_certs=str(tls.certs / "other-ca.crt"))
    with anyio.fail_after(20), pytest.raises(ServerUnavailable) as info:
        await make_worker(app, url).serve()
    message = str(info.value)
    assert "TLS handshake" in message and "certificate verify failed" in message
    assert "\n" not in message


async def _check_refused(url: str, *, within: float, **timeouts: float) -> str:
    """The one-line ServerUnavailable message ``Connection(url).check()`` fails with."""
    conn = Connection(url, **timeouts)
    try:
        with anyio.fail_after(within), pytest.raises(ServerUnavailable) as info:
            await conn.check()
    finally:
        await conn.aclose()
    return str(info.value)


@pytest.mark.anyio
async def test_tls_hostname_mismatch_fails_when_checking_is_on(tls: TlsServers) -> None:
    """A server certificate for another host is refused by default, and accepted only with
    ssl_check_hostname=false."""
    ca = str(tls.certs / "ca.crt")
    message = await _check_refused(tls.url(tls.wrong_host_port, ssl_ca_certs=ca), within=20)
    assert "TLS handshake" in message
    assert "hostname" in message.lower() or "ip address mismatch" in message.lower()
    unchecked = Connection(tls.url(tls.wrong_host_port, ssl_ca_certs=ca, ssl_check_hostname="false"))
    try:
        with anyio.fail_after(20):
            await unchecked.check()  # same certificate chain: only the host name differed
    finally:
        await unchecked.aclose()


@pytest.mark.anyio
async def test_plain_redis_url_to_a_tls_port_hints_at_rediss(tls: TlsServers) -> None:
    """A redis:// URL aimed at a TLS port fails with a message saying the server speaks TLS and to use
    rediss://, not only "Connection reset by peer"."""
    message = await _check_refused(f"redis://127.0.0.1:{tls.good_port}/0", within=30,
                                   connect_timeout=5, socket_timeout=5)
    assert f"127.0.0.1:{tls.good_port} speaks TLS" in message and "use a rediss:// URL" in message, message
    assert "\n" not in message


@pytest.fixture(scope="module")
def tls_client_certs_required(tls: TlsServers) -> Iterator[int]:
    """The TLS port of a server (same certificates as ``tls``) that requires client certificates."""
    server, port = _start_tls_server(tls.good.binary, tls.certs, "server", auth_clients="yes")
    try:
        yield port
    finally:
        server.stop()


@pytest.mark.anyio
async def test_missing_client_certificate_hints_at_ssl_certfile(
    tls: TlsServers, tls_client_certs_required: int
) -> None:
    """Without a client certificate, a server with tls-auth-clients yes is refused with a hint at
    ssl_certfile/ssl_keyfile (not at ssl_ca_certs); with them the same URL connects."""
    ca = str(tls.certs / "ca.crt")
    message = await _check_refused(tls.url(tls_client_certs_required, ssl_ca_certs=ca), within=30,
                                   connect_timeout=5, socket_timeout=5)
    assert "requires a client certificate" in message, message
    assert "ssl_certfile" in message and "ssl_keyfile" in message, message
    assert "check ssl_ca_certs" not in message, message
    with_cert = Connection(tls.url(tls_client_certs_required, ssl_ca_certs=ca,
                                   ssl_certfile=str(tls.certs / "client.crt"),
                                   ssl_keyfile=str(tls.certs / "client.key")))
    try:
        with anyio.fail_after(30):
            await with_cert.check()
    finally:
        await with_cert.aclose()


@pytest.mark.anyio
async def test_client_certificate_of_an_unknown_ca_is_named_as_refused(
    tls: TlsServers, tls_client_certs_required: int
) -> None:
    """A client certificate signed by a CA the server does not trust is reported as refused by the
    server (a hint at ssl_certfile), not as a problem with ssl_ca_certs."""
    c = tls.certs
    if not (c / "stranger.crt").exists():
        _make_leaf(c, "stranger", "other-ca", "DNS:stranger")
    url = tls.url(tls_client_certs_required, ssl_ca_certs=str(c / "ca.crt"),
                  ssl_certfile=str(c / "stranger.crt"), ssl_keyfile=str(c / "stranger.key"))
    message = await _check_refused(url, within=30, connect_timeout=5, socket_timeout=5)
    assert "the server refused the client certificate in ssl_certfile" in message, message
    assert "check ssl_ca_certs" not in message, message


@pytest.mark.anyio
async def test_tls_options_are_validated(tmp_path: Path) -> None:
    """TLS options on redis://, missing certificate files and unknown URL options are ConfigErrors naming
    redis_url."""
    cases = [
        ("redis://127.0.0.1:1/0?ssl_ca_certs=/etc/hosts", "use a rediss:// URL"),
        (f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path}/missing.pem", "no such file"),
        ("rediss://127.0.0.1:1/0?ssl_check_hostname=maybe", "not true or false"),
        ("redis://127.0.0.1:1/0?sslca=/x", "unknown URL option 'sslca'"),
    ]
    for url, expected in cases:
        conn = Connection(url)
        with pytest.raises(ConfigError) as info:
            await conn.client()
        assert info.value.setting == "redis_url" and expected in str(info.value), url
        await conn.aclose()


# -- secrets ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_server() -> Iterator[ServerProcess]:
    """A private server that requires the password SECRET."""
    with ServerProcess(find_server_binary("redis"), name="streamflow-test-auth",
                       args=["--requirepass", SECRET]) as server:
        yield server


def test_redact_url_hides_every_password_form() -> None:
    """redact_url hides passwords with or without a user name, with raw @, in query strings and in any
    text."""
    cases = {
        f"redis://:{SECRET}@h:6379/0": "redis://:***@h:6379/0",
        f"REDISS://user:{SECRET}@h/0": "REDISS://user:***@h/0",
        f"redis://u:a@{SECRET}@h/0": "redis://u:***@h/0",
        f"unix://:{SECRET}@/run/redis.sock?db=1": "unix://:***@/run/redis.sock?db=1",
        f"redis://h:6379/0?db=1&password={SECRET}": "redis://h:6379/0?db=1&password=***",
        f"Error at redis://:{SECRET}@h/0, retrying": "Error at redis://:***@h/0, retrying",
        f'{{"url": "rediss://u:{SECRET}@h/0"}}': '{"url": "rediss://u:***@h/0"}',
        "redis://h:6379/0": "redis://h:6379/0",
    }
    for text, expected in cases.items():
        assert redact_url(text) == expected


def test_connection_repr_hides_the_password() -> None:
    """repr() and str() of a Connection show the URL with the password replaced."""
    conn = Connection(f"redis://worker:{SECRET}@127.0.0.1:1/0")
    assert SECRET not in repr(conn) and SECRET not in str(conn)
    assert "redis://worker:***@127.0.0.1:1/0" in repr(conn)


def test_settings_repr_hides_the_password() -> None:
    """repr() of Settings shows the URL with the password replaced."""
    assert SECRET not in repr(Settings(redis_url=f"redis://:{SECRET}@h:1/0"))



@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logs_hide_passwords_in_nested_values_and_exceptions(
    fmt: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    restore_logging: None,
) -> None:
    """Both log formats redact URL passwords in nested values, exception messages, tracebacks and stdlib
    records."""
    configure_logging("debug", fmt)
    log = structlog.get_logger("test")
    log.info("event", url=f"redis://:{SECRET}@h/0", nested={
        "a": [f"rediss://u:{SECRET}@h/0"], "b": ("x", {"c": f"redis://h/0?password={SECRET}"})})
    log.warning("failed", error=ValueError(f"cannot use redis://u:{SECRET}@h/0"))

    def lose_connection() -> None:
        raise ConnectionError(f"lost redis://:{SECRET}@h:6379/0")

    try:
        lose_connection()
    except ConnectionError:
        log.exception("boom")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("redis.test").warning("reconnecting to %s", f"redis://:{SECRET}@h/0")
    err = capsys.readouterr().err
    assert "event" in err and "boom" in err and "ConnectionError" in err
    assert SECRET not in err and SECRET not in caplog.text
    assert "redis://:***@h/0" in err and "password=***" in err
    assert "redis://:***@h/0" in caplog.text
    if fmt == "json":
        assert all(json.loads(line) for line in err.strip().splitlines())


def test_worker_logs_and_cli_output_never_show_the_password(
    secret_server: ServerProcess, tmp_path: Path
) -> None:
    """A worker on a password-protected server (JSON logs, debug level, a failing handler whose error holds
    the URL) and `streamflow info` never print the password."""
    url = url_for(secret_server.url, None, SECRET)
    admin = redis.Redis.from_url(url)
    admin.flushall()
    (tmp_path / "secretapp.py").write_text(
        "import os\nfrom streamflow import App, Retry\napp = App()\n\n"
        "@app.handler('jobs', group='g', retry=Retry(max_attempts=1))\n"
        "async def handle(msg):\n"
        "    raise RuntimeError('cannot reach ' + os.environ['STREAMFLOW_REDIS_URL'])\n"
    )
    env = {**os.environ, "STREAMFLOW_REDIS_URL": url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "run", "secretapp:app", "--log-format", "json",
         "--log-level", "debug"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    def running_and(key: str) -> bool:
        assert proc.poll() is None, "the worker exited"
        return bool(admin.exists(key))

    try:
        # The group (and its stream) is created once the worker runs.
        wait_until_blocking(lambda: running_and("jobs"), timeout=20, what="the worker to start")
        admin.xadd("jobs", {"sf:json": '{"n": 1}'})
        wait_until_blocking(lambda: running_and("jobs:dlq"), timeout=20, what="a dead letter")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    events = [json.loads(line) for line in stderr.strip().splitlines()]
    names = {e.get("event") for e in events}
    assert {"worker_started", "handler_failed_final", "dead_lettered"} <= names, names
    assert SECRET not in stderr
    assert "redis://:***@" in stderr  # the URL is still shown, without its password

    for args in (["info"], ["info", "--json"], ["info", "jobs"], ["info", "jobs", "--json"]):
        out = subprocess.run([sys.executable, "-m", "streamflow", *args], env=env,
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout + out.stderr, args
    wrong_env = {**os.environ, "STREAMFLOW_REDIS_URL": url_for(secret_server.url, None, "wrong-" + SECRET)}
    for args in (["info"], ["run", "secretapp:app"]):
        out = subprocess.run([sys.executable, "-m", "streamflow", *args], env=wrong_env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("streamflow: error:") and len(out.stderr.splitlines()) == 1
        assert SECRET not in out.stdout + out.stderr and "redis://:***@" in out.stderr
    admin.close()


@pytest.mark.anyio
async def test_dead_letter_records_and_dlq_list_hide_passwords(secret_server: ServerProcess) -> None:
    """A handler error whose text holds a Redis URL is stored in the dead-letter record and listed by `dlq
    list` without the password."""
    url = url_for(secret_server.url, None, SECRET)
    admin = redis.Redis.from_url(url)
    admin.flushall()
    app = App()

    @app.handler("leaky", group="g", retry=Retry(max_attempts=1))
    async def handle(msg: Message) -> None:
        raise RuntimeError(f"cannot reach {url}")

    async with running_worker(app, url):
        admin.xadd("leaky", {"sf:json": "1"})
        await wait_until(lambda: admin.exists("leaky:dlq") == 1, timeout=15, what="a dead letter")
    out = subprocess.run([sys.executable, "-m", "streamflow", "dlq", "list", "leaky"],
                         env={**os.environ, "STREAMFLOW_REDIS_URL": url},
                         capture_output=True, text=True, timeout=30, check=False)
    records = admin.xrange("leaky:dlq")
    admin.close()
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert SECRET.encode() not in b"".join(v for _, raw in records for v in raw.values())


@pytest.mark.anyio
async def test_wrong_password_errors_hide_the_password(secret_server: ServerProcess) -> None:
    """A worker given a wrong password (or none) fails with ServerUnavailable whose text and repr hide it."""
    for url in (url_for(secret_server.url, None, "wrong-" + SECRET),
                url_for(secret_server.url, "default", "wrong-" + SECRET), secret_server.url):
        app = App()

        @app.handler("jobs", group="g")
        async def handle(msg: Message) -> None: ...

        with anyio.fail_after(10), pytest.raises(ServerUnavailable) as info:
            await make_worker(app, url).serve()
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        assert "\n" not in str(info.value)


# -- payloads -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_publish_refuses_payloads_over_the_limit(redis_url: str) -> None:
    """publish, publish_fields and publish_many raise PayloadTooLarge with the sizes and write nothing."""
    app = App(redis_url, max_payload_bytes=1000)
    try:
        with pytest.raises(PayloadTooLarge, match=r"more than max_payload_bytes=1000"):
            await app.publish("big", "x" * 1000)
        with pytest.raises(PayloadTooLarge, match=r"more than max_payload_bytes=1000"):
            await app.publish_fields("big", {"a": "x" * 600, "b": "y" * 600})
        with pytest.raises(PayloadTooLarge):
            await app.publish_many("big", ["small", "x" * 2000])
        assert await app.publish("big", "x" * 900)  # just under the limit
    finally:
        await app.aclose()
    client = redis.Redis.from_url(redis_url)
    assert client.xlen("big") == 1
    client.close()


@pytest.mark.anyio
async def test_consume_dead_letters_oversized_and_pickled_entries(redis_url: str, tmp_path: Path) -> None:
    """Entries over max_payload_bytes (a 2 MB sf:json, raw fields totalling > 1 MiB) and pickle bytes are
    dead-lettered, never unpickled, and the worker goes on."""
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    client = redis.Redis.from_url(redis_url)
    app = App()
    handled: list[Any] = []

    @app.handler("payloads", group="g", start_id="0")
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    client.xgroup_create("payloads", "g", "0", mkstream=True)
    client.xadd("payloads", {"sf:json": json.dumps("x" * 2_000_000)})
    client.xadd("payloads", {"a": "x" * 400_000, "b": "y" * 400_000, "c": "z" * 400_000})
    client.xadd("payloads", {"sf:json": pickle.dumps(Exploit())})
    client.xadd("payloads", {"sf:json": json.dumps({"ok": True})})
    async with running_worker(app, redis_url):
        await wait_until(lambda: client.xlen("payloads:dlq") == 3 and len(handled) == 1,
                         timeout=15, what="3 dead letters and 1 handled message")
    assert handled == [{"ok": True}]
    records = sorted((parse_record(i, [v for kv in raw.items() for v in kv])
                      for i, raw in client.xrange("payloads:dlq")),
                     key=lambda r: tuple(map(int, r.id.split("-"))))  # dead-lettered concurrently
    assert [r.error_type for r in records] == ["PayloadTooLarge", "PayloadTooLarge", "PayloadError"]
    assert "max_payload_bytes=1048576" in records[0].error and "max_payload_bytes" in records[1].error
    assert not marker.exists()
    assert client.xpending("payloads", "g")["pending"] == 0
    client.close()


def test_no_pickle_anywhere_in_the_package() -> None:
    """No module of the streamflow package imports pickle or another code-executing deserialiser."""
    forbidden = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                 "jsonpickle", "joblib"}
    package = Path(streamflow.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "__import__" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                names = [str(node.args[0].value)]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


# -- names --------------------------------------------------------------------------------


def test_bad_names_are_config_errors_naming_the_setting() -> None:
    """Bad stream, group, dead-letter and consumer names raise ConfigError naming the setting, before
    anything connects."""
    app = App()

    async def handler(msg: Message) -> None: ...

    for kwargs, streams, setting in [
        ({}, ("orders stream",), "stream name"),
        ({}, ("orders*",), "stream name"),
        ({}, ("",), "stream name"),
        ({}, ("x" * 201,), "stream name"),
        ({"group": "billing team"}, ("orders",), "group"),
        ({"group": "bill[ing]"}, ("orders",), "group"),
        ({"dead_letter": "dead letters"}, ("orders",), "dead_letter"),
    ]:
        with pytest.raises(ConfigError) as info:
            app.handler(*streams, **kwargs)(handler)
        assert info.value.setting == setting, (streams, kwargs)
    assert app.handlers == []
    for bad in ("worker 1", "w?", 'w"1', "w\n1"):
        with pytest.raises(ConfigError) as info:
            Settings(consumer_name=bad)
        assert info.value.setting == "consumer_name"
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"STREAMFLOW_CONSUMER_NAME": "bad name"})
    assert info.value.setting == "consumer_name"


def test_cli_bad_consumer_name_is_one_line_error(tmp_path: Path) -> None:
    """``streamflow run --consumer-name 'a b'`` exits 2 with one line naming consumer_name, without
    connecting."""
    (tmp_path / "nameapp.py").write_text(
        "from streamflow import App\napp = App()\n\n"
        "@app.handler('orders')\nasync def handle(msg):\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamflow", "run", "nameapp:app", "--consumer-name", "a b",
         "--redis-url", "redis://127.0.0.1:1/0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()
    ] and "invalid setting consumer_name" in proc.stderr


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logged_tracebacks_do_not_carry_payloads(
    fmt: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A failure logged with its traceback shows no frame locals, so message payloads stay out of logs."""
    configure_logging("info", fmt)
    log = structlog.get_logger("test")

    def handler(payload: str) -> None:
        raise ValueError("handler failed")

    secret = "-".join(["PAYLOAD", "6f1c", "NEVER", "LOGGED"])  # not in any source line
    try:
        handler(secret)
    except ValueError as exc:
        log.warning("handler_failed", exc_info=exc)
    err = capsys.readouterr().err
    assert "handler failed" in err and "ValueError" in err
    assert secret not in err
