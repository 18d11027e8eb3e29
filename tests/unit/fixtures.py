"""Shared test data: the default lab's inventory and the demo services."""

from __future__ import annotations

from ananta.config import parse_yaml_text
from ananta.controller.model import Inventory, Services
from ananta.topologies.configs import inventory
from ananta.topologies.lab import DEMO_SERVICES
from ananta.topologies.spec import LabSpec, build_plan


def default_inventory() -> Inventory:
    return inventory(build_plan(LabSpec()))


def demo_services_text() -> str:
    with open(DEMO_SERVICES, encoding="utf-8") as fh:
        return fh.read()


def demo_services() -> Services:
    return parse_yaml_text(Services, demo_services_text(), "demo")
