"""The Mux agent's config file (pure schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ananta.config import StrictModel, load_yaml_file
from ananta.controller.model import IPv4
from ananta.node import NodeConfig

AsNumber = Annotated[int, Field(ge=1, le=4294967294)]


class BgpPeerConfig(StrictModel):
    address: IPv4
    peer_as: AsNumber


class BgpConfig(StrictModel):
    local_as: AsNumber
    peers: Annotated[list[BgpPeerConfig], Field(min_length=1)]
    hold_time: Annotated[int, Field(ge=3, le=65535)] = 3
    md5_password: Annotated[str, Field(min_length=1, max_length=80)] | None = None


class MuxConfig(NodeConfig):
    run_dir: str
    bgp: BgpConfig
    poll_interval: Annotated[float, Field(gt=0, le=10)] = 0.25
    # Announce only while the Manager's leader renewed this Mux's lease this recently. Longer
    # than a Manager failover (0.3-2 s here), or every Mux would withdraw during one.
    lease_timeout: Annotated[float, Field(ge=1, le=60)] = 5.0
    # Connection entries this Mux keeps (br-int table 1); ~1 KB each in userspace OVS.
    connection_limit: Annotated[int, Field(ge=100, le=10_000_000)] = 200_000


def connection_table(config: MuxConfig) -> dict[int, dict[str, Any]]:
    """br-int's Flow_Table settings: cap the connection table (table 1) and make OVS evict
    fairly between VIPs when it is full: it evicts from the VIP (ipv4_dst) with the most
    entries, soonest-to-expire first (untrusted entries, then idle ones), so a flood on one
    VIP cannot push out another VIP's entries."""
    return {1: {"name": "connections", "flow_limit": config.connection_limit,
                "overflow_policy": "evict", "groups": ["NXM_OF_IP_DST[]"]}}


def load_mux_config(path: str) -> MuxConfig:
    return load_yaml_file(MuxConfig, path)
