"""The Host Agent's config file (pure schema)."""

from __future__ import annotations

from ananta.config import ConfigError, InvalidConfig, load_yaml_file
from ananta.node import NodeConfig, VmPort


class HostAgentConfig(NodeConfig):
    vms: list[VmPort] = []


def load_hostagent_config(path: str) -> HostAgentConfig:
    config = load_yaml_file(HostAgentConfig, path)
    errors = []
    seen: dict[object, int] = {}
    for i, vm in enumerate(config.vms):
        for key in (("ofport", vm.ofport), ("interface", vm.interface), ("name", vm.name)):
            if key in seen:
                errors.append(ConfigError(f"vms[{i}].{key[0]}", f"duplicates vms[{seen[key]}]"))
            seen.setdefault(key, i)
    if errors:
        raise InvalidConfig(path, errors)
    return config
