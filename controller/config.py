"""The Manager's config file (pure schema).

    self: manager1
    replicas:                         # every replica of the cluster, this one included
      - {name: manager1, raft: 198.19.0.11:7001, api: 198.19.0.11:8080}
      - ...
    raft_password_file: /etc/ananta/raft.password   # shared secret, never in this file
    admin_token_sha256: <sha256 hex of the admin bearer token>
    data_dir: /var/lib/ananta/manager1              # Raft journal and snapshots
    openflow: {listen_address: 198.19.0.11, port: 6653}
    inventory: {vip_pool: [...], muxes: [...], hosts: [...]}   # seeds an empty cluster
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ananta.bridges import OPENFLOW_PORT
from ananta.config import ConfigError, InvalidConfig, StrictModel, load_yaml_file
from ananta.controller.model import Inventory, IPv4, Name, check_inventory
from ananta.node import ControllerTarget

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class OpenFlowListen(StrictModel):
    listen_address: IPv4 = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = OPENFLOW_PORT


class Replica(StrictModel):
    name: Name
    raft: ControllerTarget
    api: ControllerTarget


class ManagerConfig(StrictModel):
    self: Name
    replicas: Annotated[list[Replica], Field(min_length=1, max_length=7)]
    raft_password_file: str
    admin_token_sha256: Sha256
    data_dir: str
    openflow: OpenFlowListen = OpenFlowListen()
    inventory: Inventory = Inventory()

    @property
    def me(self) -> Replica:
        return next(r for r in self.replicas if r.name == self.self)


def check_manager_config(config: ManagerConfig) -> list[ConfigError]:
    errors = check_inventory(config.inventory, "inventory")
    names = [r.name for r in config.replicas]
    if config.self not in names:
        errors.append(ConfigError("self", f"{config.self!r} is not one of the replicas"))
    for field in ("name", "raft", "api"):
        values = [getattr(r, field) for r in config.replicas]
        for i, v in enumerate(values):
            if v in values[:i]:
                errors.append(ConfigError(f"replicas[{i}].{field}", f"duplicates {v}"))
    return errors


def load_manager_config(path: str) -> ManagerConfig:
    config = load_yaml_file(ManagerConfig, path)
    errors = check_manager_config(config)
    if errors:
        raise InvalidConfig(path, errors)
    return config


def read_password(path: str) -> str:
    """The Raft password: the file's first line, which must be at least 16 characters."""
    try:
        with open(path, encoding="utf-8") as fh:
            password = fh.readline().strip()
    except OSError as exc:
        raise InvalidConfig(path, [ConfigError("raft_password_file", exc.strerror or "")]) from None
    if len(password) < 16:
        raise InvalidConfig(path, [ConfigError("raft_password_file",
                                               "the password must be at least 16 characters")])
    return password
