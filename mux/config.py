"""The Mux agent's config file (pure schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

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
    # Connections this Mux tracks (OVS conntrack entries, a few hundred bytes each), in all
    # and per VIP (each VIP has a conntrack zone of its own, so a flood on one VIP cannot
    # take another's share). A new connection over its VIP's limit is still sent by the
    # hash, without an entry.
    connection_limit: Annotated[int, Field(ge=100, le=10_000_000)] = 200_000
    connection_limit_per_vip: Annotated[int, Field(ge=10, le=10_000_000)] = 50_000

    @model_validator(mode="after")
    def _per_vip_within_total(self) -> MuxConfig:
        if self.connection_limit_per_vip > self.connection_limit:
            raise ValueError(f"connection_limit_per_vip ({self.connection_limit_per_vip}) is "
                             f"above connection_limit ({self.connection_limit})")
        return self


def load_mux_config(path: str) -> MuxConfig:
    return load_yaml_file(MuxConfig, path)
