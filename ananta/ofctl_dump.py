"""Read `ovs-ofctl -O OpenFlow15 dump-flows / dump-groups` output (pure).

Used wherever a process asks a switch what it holds without speaking OpenFlow itself: the lab's
readiness check, the tests, and the Mux agent (which VIPs is my data path programmed for).
"""

from __future__ import annotations

import re

from ananta.controller.flows import Bucket, SetField, SwitchProgram

_COOKIE = re.compile(r"^\s*cookie=(0x[0-9a-f]+)")
_GROUP = re.compile(r"group_id=(\d+)")
# OVS omits weight 1
_BUCKET = re.compile(r"bucket_id:(\d+)(?:,weight:(\d+))?(?:,actions=)?([^ ]*?)(?=,bucket=|$)")
_TUN_ID = re.compile(r"set_field:(0x[0-9a-f]+)->tun_id")

# group id -> {(bucket id, weight, the DIP it sends to as tun_id, 0 if none)}
GroupSummary = dict[int, frozenset[tuple[int, int, int]]]


def cookies_in_flow_dump(text: str) -> set[int]:
    return {int(m.group(1), 16) for line in text.splitlines() if (m := _COOKIE.match(line))}


def groups_in_dump(text: str) -> GroupSummary:
    """The GroupSummary of every group in a dump-groups reply."""
    groups: GroupSummary = {}
    for line in text.splitlines():
        m = _GROUP.search(line)
        if m:
            buckets = set()
            for b, w, acts in _BUCKET.findall(line):
                tun = _TUN_ID.search(acts)
                buckets.add((int(b), int(w or 1), int(tun.group(1), 16) if tun else 0))
            groups[int(m.group(1))] = frozenset(buckets)
    return groups


def group_summary(program: SwitchProgram) -> GroupSummary:
    return {g.group_id: frozenset((b.bucket_id, b.weight, _tunnel_id(b)) for b in g.buckets)
            for g in program.groups}


def _tunnel_id(bucket: Bucket) -> int:
    return next((int(a.value) for a in bucket.actions
                 if isinstance(a, SetField) and a.field == "tunnel_id"), 0)
