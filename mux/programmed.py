"""Which VIPs this Mux's OVS is programmed to serve, read from its flow dump (pure)."""

from __future__ import annotations

import re

from ananta.controller.flows import COOKIE_TAG, FlowKind

_NW_DST = re.compile(r"\bnw_dst=(\d+\.\d+\.\d+\.\d+)\b")


def steer_cookie_filter() -> str:
    """`ovs-ofctl dump-flows` filter selecting the Manager's VIP steering flows on br-phy."""
    value = (COOKIE_TAG << 56) | (int(FlowKind.VIP_STEER) << 48)
    return f"cookie={value:#018x}/0xffff000000000000"


def vips_in_flow_dump(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := _NW_DST.search(line))}
