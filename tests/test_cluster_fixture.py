"""Tests for LocalCluster (streamflow.embedded.cluster) and the cluster fixtures, on Redis 7 and Valkey 9."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from streamflow.embedded import ClusterNode, LocalCluster
from streamflow.embedded.cluster_view import (
    SLOTS,
    NodeEntry,
    NodeReport,
    parse_nodes,
    problems,
    split_slots,
)
from streamflow.embedded.probe import port_accepts
from streamflow.testing import ClusterFactory

# --------------------------------------------------------------------------- helpers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cluster_info(node: ClusterNode) -> dict[str, str]:
    text: str = node.client().execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _keys_per_master(cluster: LocalCluster) -> dict[int, str]:
    """One key per master (by port), found by hashing candidates with redis-py's key_slot."""
    owners = [(first, last, owner) for first, last, owner in _slot_ranges(cluster)]
    found: dict[int, str] = {}
    for i in range(10_000):
        key = f"key:{i}"
        slot = key_slot(key.encode())
        port = next(port for first, last, port in owners if first <= slot <= last)
        found.setdefault(port, key)
        if len(found) == len(owners):
            break
    return found


def _slot_ranges(cluster: LocalCluster) -> list[tuple[int, int, int]]:
    """(first, last, port) of every master's range, via master_of_slot on each range start."""
    return [(first, last, cluster.master_of_slot(first).port) for first, last in split_slots(3)]


@asynccontextmanager
async def _cluster_client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.client_url, decode_responses=True,
                                   socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- no server


def test_split_slots_covers_every_slot_once_in_near_equal_ranges() -> None:
    """The masters' slot ranges are contiguous, cover 0..16383 and differ in size by <= 1."""
    for masters in range(1, 8):
        ranges = split_slots(masters)
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
        sizes = {last - first + 1 for first, last in ranges}
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="masters"):
        split_slots(0)


def test_parse_nodes_reads_roles_slots_and_flags() -> None:
    """CLUSTER NODES lines give id, port, flags, master and slot ranges (migrations skipped)."""
    text = (
        "a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 5462 [5461->-b2]\n"
        "b2 127.0.0.1:30002@40002,host master,fail? - 0 0 2 connected 5461 5463-16383\n"
        "c3 127.0.0.1:30003@40003 slave a1 0 0 1 connected\n"
    )
    view = parse_nodes(text)
    assert view["a1"].slots == ((0, 5460), (5462, 5462)) and view["a1"].is_master
    assert view["b2"].port == 30002 and not view["b2"].healthy
    assert view["c3"].master_id == "a1" and not view["c3"].is_master and view["c3"].healthy
    with pytest.raises(ValueError, match="unexpected"):
        parse_nodes("a1 127.0.0.1:1@2 master")


def _healthy_pair(**changes: object) -> list[NodeReport]:
    """Two nodes, a master with every slot and its replica, optionally made unhealthy."""
    master = NodeEntry("m", 1, frozenset({"master"}), None, ((0, SLOTS - 1),))
    replica = NodeEntry("r", 2, frozenset({"slave"}), "m", ())
    me = frozenset({"myself"})
    view_m = {"m": NodeEntry("m", 1, master.flags | me, None, master.slots), "r": replica}
    view_r = {"m": master, "r": NodeEntry("r", 2, replica.flags | me, "m", ())}
    for node_id, entry in changes.items():
        assert isinstance(entry, NodeEntry)
        view_m[node_id] = entry
    return [NodeReport("m", 1, "ok", view_m, None),
            NodeReport("r", 2, str(changes.get("state", "ok")), view_r, True)]


def test_problems_is_empty_only_for_a_ready_cluster() -> None:
    """A ready pair gives no problem; a gap, a pfail flag or a down link each is named."""
    assert problems(_healthy_pair()) == []
    gap = NodeEntry("m", 1, frozenset({"myself", "master"}), None, ((0, 99),))
    assert any("slots 100-16383 have no owner" in p for p in problems(_healthy_pair(m=gap)))
    suspect = NodeEntry("r", 2, frozenset({"slave", "fail?"}), "m", ())
    assert any("flags :2 as fail?,slave" in p for p in problems(_healthy_pair(r=suspect)))
    reports = _healthy_pair()
    reports[1] = NodeReport("r", 2, "ok", reports[1].view, False)
    assert problems(reports) == ["replica :2 has master_link_status down"]
    reports[1] = NodeReport("r", 2, "fail", reports[1].view, True)
    assert problems(reports) == ["node :2 reports cluster_state:fail"]
    assert problems([]) == ["no node of the cluster is running"]


def test_local_cluster_rejects_bad_arguments() -> None:
    """Bad sizes and timeouts raise ValueError naming the argument."""
    with pytest.raises(ValueError, match="masters"):
        LocalCluster("redis-server", masters=0)
    with pytest.raises(ValueError, match="replicas"):
        LocalCluster("redis-server", replicas=-1)
    with pytest.raises(ValueError, match="node_timeout_ms"):
        LocalCluster("redis-server", node_timeout_ms="2000")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- session cluster


def test_session_cluster_is_up_with_three_masters_each_replicated(any_cluster: LocalCluster) -> None:
    """All 16384 slots are served, cluster_state is ok everywhere, 3 masters with 1 replica each."""
    assert len(any_cluster.nodes) == 6
    for node in any_cluster.nodes:
        info = _cluster_info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == str(SLOTS)
        assert info["cluster_known_nodes"] == "6"
        assert node.port <= 55535 and node.pid is not None
        assert port_accepts(node.port + 10000)  # its cluster bus
        assert (node.server.dir / "nodes.conf").is_file()
        config = node.client().config_get("*")
        assert config["cluster-enabled"] == "yes" and config["appendonly"] == "no"
        assert config["save"] == "" and config["bind"] == "127.0.0.1"
    masters = any_cluster.masters()
    assert len(masters) == 3 and len(any_cluster.replicas()) == 3
    replicated = sorted(m.port for r in any_cluster.replicas() if (m := any_cluster.master_of(r)))
    assert replicated == sorted(m.port for m in masters)
    first = masters[0].port
    assert any_cluster.url == f"redis+cluster://127.0.0.1:{first}"
    assert any_cluster.client_url == f"redis://127.0.0.1:{first}"


def test_misuse_is_refused_with_a_clear_error(any_cluster: LocalCluster) -> None:
    """Out-of-range slots, foreign nodes and a failover wait on a node without replicas raise."""
    with pytest.raises(ValueError, match="slot must be"):
        any_cluster.master_of_slot(SLOTS)
    with pytest.raises(ValueError, match="had no replica"):
        any_cluster.wait_failover(any_cluster.replicas()[0], timeout=0.1)
    stranger = ClusterNode(any_cluster.nodes[0].server, "x" * 40, "master")
    with pytest.raises(ValueError, match="is not a node of"):
        any_cluster.kill(stranger)


@pytest.mark.anyio
async def test_cluster_client_reads_and_writes_on_every_master(
    cluster_url: str, any_cluster: LocalCluster
) -> None:
    """redis-py's RedisCluster sets and gets keys on all three masters, where master_of_slot says."""
    assert cluster_url == any_cluster.url
    keys = _keys_per_master(any_cluster)
    assert sorted(keys) == sorted(m.port for m in any_cluster.masters())
    async with _cluster_client(any_cluster) as client:
        for port, key in keys.items():
            assert await client.set(key, f"value-{port}")
            assert await client.get(key) == f"value-{port}"
    for port, key in keys.items():
        owner = any_cluster.master_of_slot(key_slot(key.encode()))
        assert owner.port == port and owner.client().get(key) == f"value-{port}"


def test_flushall_empties_every_master_and_replica(any_cluster: LocalCluster) -> None:
    """LocalCluster.flushall (behind cluster_url) leaves no key on any node, replicas included."""
    for port, key in _keys_per_master(any_cluster).items():
        pipe = any_cluster.master_of_slot(key_slot(key.encode())).client().pipeline(
            transaction=False)
        pipe.set(key, port)
        pipe.wait(1, 5000)
        assert pipe.execute() == [True, 1]
    assert all(node.client().dbsize() == 1 for node in any_cluster.nodes)
    any_cluster.flushall()
    assert [node.client().dbsize() for node in any_cluster.nodes] == [0] * 6


# --------------------------------------------------------------------------- fresh clusters


@pytest.mark.slow
@pytest.mark.anyio
async def test_killed_master_fails_over_and_rejoins_as_replica(make_cluster: ClusterFactory) -> None:
    """Kill a master: its replica takes over with its data; restarted, it replicates the new one."""
    cluster = make_cluster()
    victim = cluster.masters()[1]  # not the first: the clients' start-up node stays up
    (old_replica,) = [r for r in cluster.replicas() if cluster.master_of(r) is victim]
    key = _keys_per_master(cluster)[victim.port]
    pipe = victim.client().pipeline(transaction=False)
    pipe.set(key, "before")
    pipe.wait(1, 5000)  # the replica has it before the kill
    assert pipe.execute() == [True, 1]
    old_pid = victim.pid

    async with _cluster_client(cluster) as client:
        assert await client.get(key) == "before"
        began = time.monotonic()
        cluster.kill(victim)
        assert old_pid is not None and not _pid_alive(old_pid)
        with pytest.raises(TimeoutError, match="not live masters"):
            cluster.wait_ok(timeout=0.2)
        promoted = cluster.wait_failover(victim, timeout=30)
        failover_seconds = time.monotonic() - began

        assert promoted is old_replica and promoted.role == "master"
        assert len(cluster.masters()) == 3
        assert cluster.master_of_slot(key_slot(key.encode())) is promoted
        assert await client.get(key) == "before"  # the client from before the kill recovers
        assert await client.set(key, "after")
    async with _cluster_client(cluster) as fresh:
        assert await fresh.get(key) == "after"

    cluster.restart(victim, timeout=30)
    assert victim.port == victim.server.port and victim.pid not in (None, old_pid)
    assert victim.role == "replica" and cluster.master_of(victim) is promoted
    assert sorted(n.port for n in cluster.masters()) == sorted(
        m.port for r in cluster.replicas() if (m := cluster.master_of(r)))
    assert failover_seconds < 15, f"failover took {failover_seconds:.1f}s"


def test_stop_leaves_no_process_and_no_directory(make_cluster: ClusterFactory) -> None:
    """stop() ends every node by PID, a killed one included, and removes their temp dirs."""
    cluster = make_cluster()
    nodes = cluster.nodes
    pids = [node.pid for node in nodes]
    dirs: list[Path] = [node.server.dir for node in nodes]
    ports = [node.port for node in nodes]
    cluster.kill(cluster.replicas()[0])
    cluster.stop()
    assert all(pid is not None and not _pid_alive(pid) for pid in pids)
    assert not any(directory.exists() for directory in dirs)
    assert not any(port_accepts(port) for port in ports)
    assert cluster.nodes == []
    cluster.stop()  # idempotent
    with pytest.raises(RuntimeError, match="no live master"):
        _ = cluster.url
