"""What the Mux and the Host Agent have in common: their OVS bridges and uplink (pure).

`bridge_specs` says what OVSDB must hold for a node's bridges, ports and controller targets
(ananta/ovsdb.py writes it with ovsdbapp, idempotently); `host_network_commands` the argv
lists that set its underlay address and route (ip ... replace), run with
`ananta.shell.run_all`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from ananta.bridges import (
    BR_INT,
    BR_PHY,
    GRE_PORT,
    INT_GRE_OFPORT,
    INT_PATCH_OFPORT,
    PATCH_INT_TO_PHY,
    PATCH_PHY_TO_INT,
    PHY_PATCH_OFPORT,
    PHY_UPLINK_OFPORT,
)
from ananta.config import StrictModel
from ananta.controller.model import BridgeIds, IPv4, Name


def _interface(value: str) -> str:
    if not (1 <= len(value) <= 15) or any(c in value for c in "/ \t:"):
        raise ValueError(f"not a Linux interface name: {value!r}")
    return value


def _prefix(value: str) -> str:
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"not an IPv4 address/prefix: {value!r}") from None
    if iface.network.prefixlen == 32:
        raise ValueError(f"needs a prefix length shorter than /32: {value!r}")
    return str(iface)


def _target(value: str) -> str:
    host, _, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        if not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"not ADDRESS:PORT: {value!r}") from None
    return value


Interface = Annotated[str, AfterValidator(_interface)]
Prefix = Annotated[str, AfterValidator(_prefix)]
ControllerTarget = Annotated[str, AfterValidator(_target)]


class Uplink(StrictModel):
    interface: Interface
    address: Prefix
    gateway: IPv4
    mtu: Annotated[int, Field(ge=1280, le=9216)] = 1600
    # How the userspace datapath reads and writes the uplink: af_packet, a socket served by
    # ovs-vswitchd's main thread; or af_xdp, an XDP socket polled by a PMD thread (about twice
    # the packet rate at half the CPU per packet, and that thread takes a core: see `pmd`).
    # `xdp_mode` is OVS's: best-effort tries zero-copy, then native, then generic XDP.
    driver: Literal["af_packet", "af_xdp"] = "af_packet"
    xdp_mode: Literal["best-effort", "native-with-zerocopy", "native", "generic"] = "best-effort"


class Pmd(StrictModel):
    """The PMD threads that poll AF_XDP ports: on the CPUs of `cpu_mask` (hex), each sleeping
    up to `max_sleep_us` when its ports are idle (else it spins a whole core)."""

    cpu_mask: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{1,16}$")]
    max_sleep_us: Annotated[int, Field(ge=0, le=10000)] = 100


class VmPort(StrictModel):
    name: Name
    interface: Interface
    ofport: Annotated[int, Field(ge=10, le=60000)]


class NodeConfig(StrictModel):
    """Fields every data-plane node's config has."""

    name: Name
    ovs_rundir: str = "/var/run/openvswitch"
    datapath_ids: BridgeIds
    uplink: Uplink
    managers: Annotated[list[ControllerTarget], Field(min_length=1)]
    pmd: Pmd | None = None

    @property
    def underlay_address(self) -> str:
        return str(ipaddress.IPv4Interface(self.uplink.address).ip)


@dataclass(frozen=True)
class InterfaceSpec:
    """A port of one interface (same name) and the interface's columns."""

    name: str
    columns: dict[str, Any]


@dataclass(frozen=True)
class BridgeSpec:
    """What a bridge must hold in OVSDB: its columns, controllers, ports, the columns of its
    own (LOCAL) interface, and per-table Flow_Table settings."""

    name: str
    columns: dict[str, Any]
    controllers: tuple[str, ...]
    ports: tuple[InterfaceSpec, ...]
    local: dict[str, Any] = field(default_factory=dict)
    flow_tables: dict[int, dict[str, Any]] = field(default_factory=dict)


def bridge_specs(node: NodeConfig, vms: Sequence[VmPort] = (), int_hwaddr: str | None = None,
                 int_flow_tables: dict[int, dict[str, Any]] | None = None,
                 int_extra_ports: Sequence[InterfaceSpec] = (),
                 ) -> tuple[BridgeSpec, BridgeSpec]:
    """br-phy (uplink, patch to br-int, the underlay MTU) and br-int (patch, GRE, VM ports),
    userspace datapath, every Manager as controller; applied in one OVSDB transaction
    (ananta/ovsdb.py), idempotently."""
    controllers = tuple(f"tcp:{t}" for t in node.managers)

    def columns(dpid: str, hwaddr: str | None = None) -> dict[str, Any]:
        other = {"datapath-id": dpid, "disable-in-band": "true"}
        if hwaddr:
            other["hwaddr"] = hwaddr
        return {"datapath_type": "netdev", "fail_mode": "secure", "other_config": other,
                "protocols": ["OpenFlow10", "OpenFlow13", "OpenFlow15"]}

    def patch(name: str, peer: str, ofport: int) -> InterfaceSpec:
        return InterfaceSpec(name, {"type": "patch", "options": {"peer": peer},
                                    "ofport_request": ofport})

    uplink: dict[str, Any] = {"ofport_request": PHY_UPLINK_OFPORT, "type": ""}
    if node.uplink.driver == "af_xdp":
        uplink.update(type="afxdp", options={"xdp-mode": node.uplink.xdp_mode})
    phy = BridgeSpec(BR_PHY, columns(node.datapath_ids.phy), controllers, (
        InterfaceSpec(node.uplink.interface, uplink),
        patch(PATCH_PHY_TO_INT, PATCH_INT_TO_PHY, PHY_PATCH_OFPORT),
    ), local={"mtu_request": node.uplink.mtu})
    int_ = BridgeSpec(BR_INT, columns(node.datapath_ids.int, int_hwaddr), controllers, (
        patch(PATCH_INT_TO_PHY, PATCH_PHY_TO_INT, INT_PATCH_OFPORT),
        InterfaceSpec(GRE_PORT, {"type": "gre", "options": {"remote_ip": "flow", "key": "flow"},
                                 "ofport_request": INT_GRE_OFPORT}),
        *(InterfaceSpec(vm.interface, {"ofport_request": vm.ofport}) for vm in vms),
        *int_extra_ports,
    ), flow_tables=dict(int_flow_tables or {}))
    return phy, int_


def vswitchd_options(node: NodeConfig) -> dict[str, str]:
    """ovs-vswitchd's own settings (the Open_vSwitch row's other_config) the node asks for."""
    if node.pmd is None:
        return {}
    return {"pmd-cpu-mask": node.pmd.cpu_mask, "pmd-maxsleep": str(node.pmd.max_sleep_us)}


def probe_port_commands(addresses: Sequence[str]) -> list[list[str]]:
    """br-int's LOCAL port as the VMs' gateway, for the host agent's health probes: the
    gateway addresses, checksums done in software (its MAC, the ARP responder's GATEWAY_MAC,
    is br-int's `other_config:hwaddr`, see bridge_specs)."""
    if not addresses:
        return []
    cmds = [
        ["ip", "link", "set", BR_INT, "up"],
        ["ethtool", "-K", BR_INT, "tx", "off"],
    ]
    cmds += [["ip", "addr", "replace", a, "dev", BR_INT] for a in addresses]
    return cmds


def host_network_commands(node: NodeConfig, vms: Sequence[VmPort] = ()) -> list[list[str]]:
    """Underlay address on br-phy's LOCAL port, default route, and the uplink sysctls."""
    up = node.uplink
    cmds = [
        ["sysctl", "-qw", f"net.ipv4.conf.{up.interface}.arp_ignore=1"],
        ["sysctl", "-qw", f"net.ipv6.conf.{up.interface}.disable_ipv6=1"],
        ["ip", "link", "set", up.interface, "up"],
        ["ip", "link", "set", BR_PHY, "up"],
        ["ip", "addr", "replace", up.address, "dev", BR_PHY],
        ["ip", "route", "replace", "default", "via", up.gateway, "dev", BR_PHY],
    ]
    cmds += [["ip", "link", "set", vm.interface, "up"] for vm in vms]
    return cmds


def kernel_neighbor_mac(kernel_neigh_json: str, address: str) -> str | None:
    """`address`'s MAC in `ip -j neigh show to ADDRESS` output, if the kernel has a usable
    entry."""
    try:
        entries = json.loads(kernel_neigh_json or "[]")
    except ValueError:
        return None
    usable = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}
    return next((str(e["lladdr"]) for e in entries if isinstance(e, dict)
                 and e.get("dst") == address and e.get("lladdr")
                 and usable & set(e.get("state", []))), None)


def ovs_has_tunnel_neighbor(ovs_neigh_show: str, address: str, mac: str) -> bool:
    """Whether `ovs-appctl tnl/neigh/show` lists `address` at `mac` on br-phy."""
    return any(line.split()[:3] == [address, mac, BR_PHY] for line in ovs_neigh_show.splitlines())
