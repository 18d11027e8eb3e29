"""The Mux agent's config file (pure schema)."""

from __future__ import annotations

from typing import Annotated

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
    poll_interval: Annotated[float, Field(gt=0, le=10)] = 0.5


def load_mux_config(path: str) -> MuxConfig:
    return load_yaml_file(MuxConfig, path)
