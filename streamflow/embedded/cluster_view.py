"""What a local Redis Cluster's nodes say about it, and whether that adds up to a healthy cluster.

Pure functions, no I/O (the polling lives in :mod:`.cluster`):

* :func:`parse_nodes` reads one node's ``CLUSTER NODES`` reply into :class:`NodeEntry` rows;
* :func:`split_slots` spreads the 16384 hash slots evenly over the masters;
* :func:`problems` takes one :class:`NodeReport` per live node and lists, in plain words,
  everything that keeps the cluster from being ready: a node not ``cluster_state:ok``, slots
  not covered, two nodes disagreeing about the slot map or about who replicates whom, a live
  node another one still flags as failing, a replica whose link to its master is down. An
  empty list means ready.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "SLOTS",
    "NodeEntry",
    "NodeReport",
    "SlotMap",
    "parse_nodes",
    "problems",
    "slot_map",
    "split_slots",
]

#: Number of hash slots of a Redis Cluster.
SLOTS = 16384

#: A slot map: sorted ``(first slot, last slot, owner node id)`` ranges.
SlotMap = tuple[tuple[int, int, str], ...]

#: Flags that mean a node is not (yet) a healthy member in the eyes of the one reporting.
_UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class NodeEntry:
    """One line of ``CLUSTER NODES``: a node as the reporting node sees it."""

    node_id: str
    port: int  # client port (the bus port is port + 10000)
    flags: frozenset[str]  # e.g. {"myself", "master"}, {"slave", "fail"}
    master_id: str | None  # the master it replicates, None for a master
    slots: tuple[tuple[int, int], ...]  # slot ranges it serves (masters only)

    @property
    def is_master(self) -> bool:
        """True when the reporting node sees this node as a master."""
        return "master" in self.flags

    @property
    def healthy(self) -> bool:
        """False while flagged ``fail``, ``fail?`` (pfail), ``handshake`` or ``noaddr``."""
        return not self.flags & _UNHEALTHY_FLAGS


@dataclass(frozen=True)
class NodeReport:
    """What one live node said in one poll: its state, its view, its replication link."""

    node_id: str  # the reporting node (its CLUSTER MYID)
    port: int
    state: str  # cluster_state from CLUSTER INFO: "ok" or "fail"
    view: Mapping[str, NodeEntry]  # its CLUSTER NODES, by node id
    link_up: bool | None  # master_link_status:up for a replica, None for a master

    @property
    def me(self) -> NodeEntry | None:
        """The reporting node's own line (flag ``myself``)."""
        entry = self.view.get(self.node_id)
        return entry if entry is not None and "myself" in entry.flags else None


def parse_nodes(text: str) -> dict[str, NodeEntry]:
    """Parse a ``CLUSTER NODES`` reply into entries by node id.

    ``<id> <ip:port@cport[,hostname]> <flags> <master|-> <ping> <pong> <epoch> <link> <slots>...``;
    slots are ``N`` or ``N-M``; ``[N->-id]`` / ``[N-<-id]`` (migrating, importing) are skipped.
    Raises ValueError on a line that does not have that shape.
    """
    entries: dict[str, NodeEntry] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise ValueError(f"unexpected CLUSTER NODES line: {line!r}")
        node_id, address, flags, master = fields[:4]
        hostport = address.split("@", 1)[0]
        port_text = hostport.rpartition(":")[2]
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        entries[node_id] = NodeEntry(
            node_id=node_id,
            port=int(port_text) if port_text.isdigit() else 0,  # 0: address not known yet
            flags=frozenset(flags.split(",")),
            master_id=None if master == "-" else master,
            slots=tuple(sorted(slots)),
        )
    return entries


def split_slots(masters: int) -> list[tuple[int, int]]:
    """The 16384 slots in ``masters`` contiguous ranges whose sizes differ by at most one."""
    if masters < 1:
        raise ValueError(f"masters must be >= 1, not {masters}")
    bounds = [i * SLOTS // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


def slot_map(view: Mapping[str, NodeEntry]) -> SlotMap:
    """The slot ranges of every master in ``view``, sorted, adjacent ranges of one owner merged."""
    ranges = sorted(
        (first, last, entry.node_id)
        for entry in view.values()
        if entry.is_master
        for first, last in entry.slots
    )
    merged: list[tuple[int, int, str]] = []
    for first, last, owner in ranges:
        if merged and merged[-1][2] == owner and merged[-1][1] + 1 == first:
            merged[-1] = (merged[-1][0], last, owner)
        else:
            merged.append((first, last, owner))
    return tuple(merged)


def _coverage_problem(slots: SlotMap) -> str | None:
    """Why ``slots`` does not cover 0..16383 exactly once, or None."""
    expected = 0
    for first, last, _owner in slots:
        if first != expected:
            return f"slots {expected}-{first - 1} have no owner" if first > expected else (
                f"slot {first} has two owners")
        expected = last + 1
    if expected != SLOTS:
        return f"slots {expected}-{SLOTS - 1} have no owner"
    return None


def problems(reports: Iterable[NodeReport]) -> list[str]:
    """Everything that keeps the cluster of these live nodes from being ready; [] when ready.

    Ready means: every live node reports ``cluster_state:ok``; every live node's slot map is
    the same, covers all 16384 slots and names only live nodes that call themselves master;
    every live master owns slots; every live node appears healthy (not failing, not in
    handshake) in every live node's view, with the role and master it gives itself; and every
    replica replicates a live master over a link that is up.
    """
    reports = list(reports)
    if not reports:
        return ["no node of the cluster is running"]
    found: list[str] = []
    selves: dict[str, NodeEntry] = {}
    for report in reports:
        me = report.me
        if me is None:
            found.append(f"node :{report.port} does not list itself in CLUSTER NODES")
            continue
        selves[report.node_id] = me
        if report.state != "ok":
            found.append(f"node :{report.port} reports cluster_state:{report.state}")
    if found:
        return found

    live_masters = {node_id for node_id, me in selves.items() if me.is_master}
    reference: SlotMap | None = None
    for report in reports:
        slots = slot_map(report.view)
        gap = _coverage_problem(slots)
        if gap is not None:
            found.append(f"in the view of :{report.port}, {gap}")
        strangers = {owner for _f, _l, owner in slots} - live_masters
        if strangers:
            found.append(f"in the view of :{report.port}, slots belong to nodes that are not "
                         f"live masters: {', '.join(sorted(strangers))}")
        if reference is None:
            reference = slots
        elif slots != reference:
            found.append(f"node :{report.port} disagrees with :{reports[0].port} about the slot map")
        for node_id, me in selves.items():
            entry = report.view.get(node_id)
            if entry is None:
                found.append(f"node :{report.port} does not know node :{me.port}")
            elif not entry.healthy:
                found.append(f"node :{report.port} flags :{me.port} as "
                             f"{','.join(sorted(entry.flags))}")
            elif entry.is_master != me.is_master or entry.master_id != me.master_id:
                found.append(f"node :{report.port} disagrees with :{me.port} about its role")
    owners = {owner for _f, _l, owner in reference or ()}
    for report in reports:
        me = selves[report.node_id]
        if me.is_master and report.node_id not in owners:
            found.append(f"master :{report.port} owns no slots")
        if not me.is_master:
            if me.master_id not in live_masters:
                found.append(f"replica :{report.port} replicates {me.master_id}, "
                             f"not a live master")
            elif not report.link_up:
                found.append(f"replica :{report.port} has master_link_status down")
    return found
