"""Render chaos results (JSON lines written through ``STREAMFLOW_CHAOS_RESULTS``) as Markdown.

::

    STREAMFLOW_CHAOS_RESULTS=/tmp/chaos.jsonl python -m pytest -m chaos tests/chaos
    python -m tests.chaos.report /tmp/chaos.jsonl

One table row per fault (the last run of each fault wins), in the order they ran.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["render"]

COLUMNS = ("produced", "handled", "dead_lettered", "lost", "duplicated", "recovery_s")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (fault, size, the COLUMNS, other figures) of the last row per fault."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest.pop(row["fault"], None)
        latest[row["fault"]] = row
    head = ("| fault | size | produced | handled | dead-lettered | lost | duplicates | "
            "recovery (s) | other figures |")
    out = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in latest.values():
        other = dict(row.get("notes") or {})
        for key in ("removed_by_fault", "unexpected", "pending_end", "overlaps", "in_flight_window"):
            if row.get(key):
                other[key] = row[key]
        cells = [row["fault"], row.get("size", "")] + [_cell(row.get(c)) for c in COLUMNS]
        cells.append(", ".join(f"{k}={v}" for k, v in other.items()) or "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.chaos.report RESULTS.jsonl", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
