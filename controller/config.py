"""The Manager's config file (pure schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ananta.bridges import OPENFLOW_PORT
from ananta.config import InvalidConfig, StrictModel, load_yaml_file
from ananta.controller.model import Inventory, IPv4, Services, check_inventory, check_services


class OpenFlowListen(StrictModel):
    listen_address: IPv4 = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = OPENFLOW_PORT


class ManagerConfig(StrictModel):
    openflow: OpenFlowListen = OpenFlowListen()
    services_file: str
    inventory: Inventory


def load_manager_config(path: str) -> ManagerConfig:
    config = load_yaml_file(ManagerConfig, path)
    errors = check_inventory(config.inventory, "inventory")
    if errors:
        raise InvalidConfig(path, errors)
    return config


def load_services(path: str, inventory: Inventory) -> Services:
    services = load_yaml_file(Services, path)
    errors = check_services(services, inventory)
    if errors:
        raise InvalidConfig(path, errors)
    return services
