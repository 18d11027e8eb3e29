"""The lab as data: a declarative Clos spec expanded into nodes, links and addresses (pure).

Default: one border router (with the outside client network), 2 spines, 2 leaves, 2 Muxes,
2 hypervisors with 2 VMs each, and 3 Manager replicas on a management network (a Linux
bridge in its own namespace, the `mgmt` node). Every address, AS
number and datapath id is derived here, so the lab builder, the node configs and the tests
all read the same plan.

Address plan (never routed anywhere outside the lab's namespaces):
  underlay point-to-point links  198.18.<k>.0/30   (router side .1, lower side .2)
  management network             198.19.0.0/24     (managers .10+i, muxes .20+i, hosts .40+i)
  outside clients                198.51.100.0/24   (border .1, clients .2+)
  VIPs                           203.0.113.0/24
  VMs (DIPs) on hypervisor i     10.<i>.0.0/24     (gateway .1, VM j at .10+j)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from ananta.config import StrictModel

Role = Literal["router", "mux", "hypervisor", "vm", "client", "manager", "switch"]

UNDERLAY_MTU = 1600
EDGE_MTU = 1500
MGMT_NET = "198.19.0"
CLIENT_NET = "198.51.100"
BORDER_AS, SPINE_AS, LEAF_AS_BASE, MUX_AS = 65000, 65001, 65010, 65100


class LabSpec(StrictModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,7}$")] = "ananta"
    spines: Annotated[int, Field(ge=1, le=8)] = 2
    leaves: Annotated[int, Field(ge=1, le=8)] = 2
    muxes: Annotated[int, Field(ge=1, le=8)] = 2
    hypervisors: Annotated[int, Field(ge=1, le=8)] = 2
    vms_per_hypervisor: Annotated[int, Field(ge=1, le=8)] = 2
    clients: Annotated[int, Field(ge=1, le=8)] = 1
    managers: Annotated[int, Field(ge=1, le=5)] = 3
    vip_pool: str = "203.0.113.0/24"
    bgp_hold_time: Annotated[int, Field(ge=3, le=90)] = 3


@dataclass(frozen=True)
class Interface:
    name: str
    address: str | None  # "a.b.c.d/len"
    mtu: int
    mac: str | None = None
    tx_checksum_off: bool = False  # the sending end into a userspace OVS bridge
    set_by_agent: bool = False  # the node's agent puts this address on br-phy, not the lab


@dataclass(frozen=True)
class Link:
    a: str
    a_if: Interface
    b: str
    b_if: Interface


@dataclass
class Node:
    name: str
    role: Role
    asn: int | None = None
    index: int = 0
    interfaces: list[Interface] = field(default_factory=list)
    gateway: str | None = None  # default route (routers use BGP instead)
    leaf: str | None = None  # the leaf a mux / hypervisor hangs off
    hypervisor: str | None = None  # for VMs

    @property
    def namespace(self) -> str:
        return f"an-{self.name}"

    def address_of(self, ifname: str) -> str | None:
        for i in self.interfaces:
            if i.name == ifname:
                return i.address.split("/")[0] if i.address else None
        return None

    @property
    def addresses(self) -> list[str]:
        return [i.address for i in self.interfaces if i.address]


@dataclass
class LabPlan:
    spec: LabSpec
    nodes: dict[str, Node]
    links: list[Link]

    def by_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == role]

    def neighbors(self, name: str) -> list[tuple[Node, str, str]]:
        """(peer node, peer address, our address) over every link of `name`."""
        out = []
        for link in self.links:
            if link.a == name:
                out.append((self.nodes[link.b], _ip(link.b_if.address), _ip(link.a_if.address)))
            elif link.b == name:
                out.append((self.nodes[link.a], _ip(link.a_if.address), _ip(link.b_if.address)))
        return out


def _ip(address: str | None) -> str:
    return address.split("/")[0] if address else ""


def dpid(role: Literal["mux", "hypervisor"], index: int, bridge: Literal["int", "phy"]) -> str:
    code = 1 if role == "mux" else 2
    return f"{0x00A0 << 48 | code << 16 | index << 8 | (1 if bridge == 'int' else 2):016x}"


def vm_mac(hv_index: int, vm_index: int) -> str:
    return f"02:00:0a:{hv_index:02x}:00:{10 + vm_index:02x}"


def vm_address(hv_index: int, vm_index: int) -> str:
    return f"10.{hv_index}.0.{10 + vm_index}"


def build_plan(spec: LabSpec) -> LabPlan:
    nodes: dict[str, Node] = {}
    links: list[Link] = []

    def add(node: Node) -> Node:
        nodes[node.name] = node
        return node

    border = add(Node("border", "router", BORDER_AS))
    spines = [add(Node(f"spine{i}", "router", SPINE_AS, i)) for i in range(1, spec.spines + 1)]
    leaves = [add(Node(f"leaf{i}", "router", LEAF_AS_BASE + i, i))
              for i in range(1, spec.leaves + 1)]
    subnet = iter(range(1, 255))

    def p2p(upper: Node, lower: Node, lower_if: str | None = None, tx_off: bool = False) -> None:
        k = next(subnet)
        a_if = Interface(lower.name, f"198.18.{k}.1/30", UNDERLAY_MTU, tx_checksum_off=tx_off)
        b_if = Interface(lower_if or upper.name, f"198.18.{k}.2/30", UNDERLAY_MTU,
                         set_by_agent=lower_if is not None)
        upper.interfaces.append(a_if)
        lower.interfaces.append(b_if)
        links.append(Link(upper.name, a_if, lower.name, b_if))

    for spine in spines:
        p2p(border, spine)
    for spine in spines:
        for leaf in leaves:
            p2p(spine, leaf)
    for i in range(1, spec.muxes + 1):
        leaf = leaves[(i - 1) % len(leaves)]
        mux = add(Node(f"mux{i}", "mux", MUX_AS, i, leaf=leaf.name))
        p2p(leaf, mux, "uplink", tx_off=True)
    for i in range(1, spec.hypervisors + 1):
        leaf = leaves[(i - 1) % len(leaves)]
        hv = add(Node(f"hv{i}", "hypervisor", None, i, leaf=leaf.name))
        p2p(leaf, hv, "uplink", tx_off=True)

    # Outside clients hang off the border router.
    for i in range(1, spec.clients + 1):
        client = add(Node(f"client{i}", "client", None, i, gateway=f"{CLIENT_NET}.1"))
        b_if = Interface("eth0", f"{CLIENT_NET}.{1 + i}/24", EDGE_MTU, tx_checksum_off=True)
        a_if = Interface(client.name, f"{CLIENT_NET}.1/24" if i == 1 else None, EDGE_MTU)
        border.interfaces.append(a_if)
        client.interfaces.append(b_if)
        links.append(Link(border.name, a_if, client.name, b_if))

    # VMs: veth from the hypervisor's br-int (no address on that end) to the VM's eth0.
    vm_number = 0
    for hv in [n for n in nodes.values() if n.role == "hypervisor"]:
        for j in range(1, spec.vms_per_hypervisor + 1):
            vm_number += 1
            vm = add(Node(f"vm{vm_number}", "vm", None, j, hypervisor=hv.name,
                          gateway=f"10.{hv.index}.0.1"))
            b_if = Interface("eth0", f"{vm_address(hv.index, j)}/24", EDGE_MTU,
                             mac=vm_mac(hv.index, j), tx_checksum_off=True)
            a_if = Interface(vm.name, None, EDGE_MTU)
            hv.interfaces.append(a_if)
            vm.interfaces.append(b_if)
            links.append(Link(hv.name, a_if, vm.name, b_if))

    # Management network: a Linux bridge in the `mgmt` namespace, one port per node on it.
    mgmt = add(Node("mgmt", "switch"))
    mgmt.interfaces.append(Interface("br-mgmt", None, EDGE_MTU))
    for i in range(1, spec.managers + 1):
        add(Node(f"manager{i}", "manager", None, i))
    for node in list(nodes.values()):
        if node.role in ("mux", "hypervisor", "manager"):
            host = {"mux": 20, "hypervisor": 40, "manager": 10}[node.role] + node.index
            m_if = Interface(f"m-{node.name}", None, EDGE_MTU)
            n_if = Interface("mgmt0", f"{MGMT_NET}.{host}/24", EDGE_MTU)
            mgmt.interfaces.append(m_if)
            node.interfaces.append(n_if)
            links.append(Link(mgmt.name, m_if, node.name, n_if))
    return LabPlan(spec, nodes, links)


def manager_addresses(plan: LabPlan) -> list[str]:
    return [str(m.address_of("mgmt0")) for m in plan.by_role("manager")]
