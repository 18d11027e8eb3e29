"""The Host Agent's config file (pure schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ananta.config import ConfigError, InvalidConfig, load_yaml_file
from ananta.node import NodeConfig, Prefix, VmPort

Url = Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+$")]


class HostAgentConfig(NodeConfig):
    vms: list[VmPort] = []
    # Health monitoring: the agent probes its VMs' backends from these addresses (the VM
    # subnets' gateways, put on br-int's LOCAL port) and reports to the Manager API.
    probe_addresses: list[Prefix] = []
    manager_api: list[Url] = []
    agent_token_file: str | None = None


def load_hostagent_config(path: str) -> HostAgentConfig:
    config = load_yaml_file(HostAgentConfig, path)
    errors = []
    seen: dict[object, int] = {}
    for i, vm in enumerate(config.vms):
        for key in (("ofport", vm.ofport), ("interface", vm.interface), ("name", vm.name)):
            if key in seen:
                errors.append(ConfigError(f"vms[{i}].{key[0]}", f"duplicates vms[{seen[key]}]"))
            seen.setdefault(key, i)
    if config.manager_api and not config.agent_token_file:
        errors.append(ConfigError("agent_token_file", "needed to report health to manager_api"))
    if errors:
        raise InvalidConfig(path, errors)
    return config
