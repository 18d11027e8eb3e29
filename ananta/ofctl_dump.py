"""Read `ovs-ofctl -O OpenFlow15 dump-flows / dump-groups` output (pure).

Used wherever a process asks a switch what it holds without speaking OpenFlow itself: the lab's
readiness check, the tests, and the Mux agent (which VIPs is my data path programmed for).
"""

from __future__ import annotations

import re

from ananta.controller.flows import SwitchProgram

_COOKIE = re.compile(r"^\s*cookie=(0x[0-9a-f]+)")
_GROUP = re.compile(r"group_id=(\d+)")
_BUCKET = re.compile(r"bucket_id:(\d+)(?:,weight:(\d+))?")  # OVS omits weight 1

GroupSummary = dict[int, frozenset[tuple[int, int]]]


def cookies_in_flow_dump(text: str) -> set[int]:
    return {int(m.group(1), 16) for line in text.splitlines() if (m := _COOKIE.match(line))}


def groups_in_dump(text: str) -> GroupSummary:
    """group id -> {(bucket id, weight)} for every group in a dump-groups reply."""
    groups: GroupSummary = {}
    for line in text.splitlines():
        m = _GROUP.search(line)
        if m:
            buckets = frozenset((int(b), int(w or 1)) for b, w in _BUCKET.findall(line))
            groups[int(m.group(1))] = buckets
    return groups


def group_summary(program: SwitchProgram) -> GroupSummary:
    return {g.group_id: frozenset((b.bucket_id, b.weight) for b in g.buckets)
            for g in program.groups}
