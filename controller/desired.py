"""Every switch's desired program, from the services and the inventory (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ananta.controller.compile_host import compile_host_int, compile_host_phy, inbound_by_dip
from ananta.controller.compile_mux import compile_mux_int, compile_mux_phy
from ananta.controller.flows import SwitchProgram
from ananta.controller.model import Inventory, Services
from ananta.controller.slot_table import SlotTable
from ananta.controller.snat import SnatBlock


@dataclass(frozen=True)
class SwitchTarget:
    node: str
    role: Literal["mux", "host"]
    bridge: Literal["int", "phy"]
    dpid: int

    @property
    def label(self) -> str:
        return f"{self.node}/br-{self.bridge}"


def switch_targets(inv: Inventory) -> dict[int, SwitchTarget]:
    targets: dict[int, SwitchTarget] = {}
    for mux in inv.muxes:
        targets[int(mux.datapath_ids.int, 16)] = SwitchTarget(
            mux.name, "mux", "int", int(mux.datapath_ids.int, 16))
        targets[int(mux.datapath_ids.phy, 16)] = SwitchTarget(
            mux.name, "mux", "phy", int(mux.datapath_ids.phy, 16))
    for host in inv.hosts:
        targets[int(host.datapath_ids.int, 16)] = SwitchTarget(
            host.name, "host", "int", int(host.datapath_ids.int, 16))
        targets[int(host.datapath_ids.phy, 16)] = SwitchTarget(
            host.name, "host", "phy", int(host.datapath_ids.phy, 16))
    return targets


def desired_programs(services: Services, inv: Inventory,
                     down: frozenset[str] = frozenset(),
                     snat: Mapping[str, tuple[SnatBlock, ...]] | None = None,
                     tables: Mapping[str, SlotTable] | None = None,
                     ) -> dict[int, SwitchProgram]:
    """dpid -> program, for every switch of the inventory; `down`: backends reported down;
    `snat`: each DIP's SNAT port blocks; `tables`: each endpoint's slot table."""
    programs: dict[int, SwitchProgram] = {}
    mux_phy = compile_mux_phy(services)
    mux_int = compile_mux_int(services, inv, down, snat, tables)
    for mux in inv.muxes:
        programs[int(mux.datapath_ids.phy, 16)] = mux_phy
        programs[int(mux.datapath_ids.int, 16)] = mux_int
    host_phy = compile_host_phy()
    by_dip = inbound_by_dip(services)
    for host in inv.hosts:
        programs[int(host.datapath_ids.phy, 16)] = host_phy
        programs[int(host.datapath_ids.int, 16)] = compile_host_int(services, host, snat, by_dip)
    return programs
