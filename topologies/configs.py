"""Every config file the lab hands to the real daemons, derived from the plan (pure).

The lab writes these files and starts the same entry points a deployment would:
ananta-manager (manager.yaml, one per replica), ananta-mux (mux.yaml), ananta-hostagent
(hostagent.yaml), and FRR's zebra/bgpd (per-router .conf). Secrets (the Raft password, the
bearer tokens) live in files under the run dir's `secrets/`, never in a config.
"""

from __future__ import annotations

import os
from typing import Any

from ananta.bridges import FIRST_VM_OFPORT, OPENFLOW_PORT
from ananta.controller.model import BridgeIds, HostNode, Inventory, MuxNode, Vm
from ananta.topologies.spec import MUX_AS, LabPlan, Node, dpid, manager_addresses

RAFT_PORT = 7001
API_PORT = 8080


def node_dir(run_dir: str, node: Node | str) -> str:
    return os.path.join(run_dir, node if isinstance(node, str) else node.name)


def _underlay(plan: LabPlan, node: Node) -> str:
    address = node.address_of("uplink")
    assert address, node.name
    return address


def _vms_of(plan: LabPlan, hv: Node) -> list[Node]:
    return [n for n in plan.nodes.values() if n.role == "vm" and n.hypervisor == hv.name]


def inventory(plan: LabPlan, agent_tokens_sha256: dict[str, str] | None = None) -> Inventory:
    """The Manager's inventory of the lab; `agent_tokens_sha256`: host -> its agent's token
    hash (hosts without one cannot report health)."""
    tokens = agent_tokens_sha256 or {}
    muxes = [
        MuxNode(name=m.name, underlay_address=_underlay(plan, m),
                datapath_ids=BridgeIds(int=dpid("mux", m.index, "int"),
                                       phy=dpid("mux", m.index, "phy")))
        for m in plan.by_role("mux")
    ]
    hosts = []
    for hv in plan.by_role("hypervisor"):
        vms = []
        for k, vm in enumerate(_vms_of(plan, hv)):
            eth0 = vm.interfaces[0]
            assert eth0.address and eth0.mac and vm.gateway
            vms.append(Vm(name=vm.name, address=eth0.address.split("/")[0], mac=eth0.mac,
                          ofport=FIRST_VM_OFPORT + k, gateway=vm.gateway))
        hosts.append(HostNode(name=hv.name, underlay_address=_underlay(plan, hv),
                              datapath_ids=BridgeIds(int=dpid("hypervisor", hv.index, "int"),
                                                     phy=dpid("hypervisor", hv.index, "phy")),
                              vms=vms, agent_token_sha256=tokens.get(hv.name)))
    return Inventory(vip_pool=[plan.spec.vip_pool], muxes=muxes, hosts=hosts)


def secret_path(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, "secrets", name)


def manager_config(plan: LabPlan, manager: Node, run_dir: str, admin_token_sha256: str,
                   agent_tokens_sha256: dict[str, str] | None = None) -> dict[str, Any]:
    replicas = [{"name": m.name, "raft": f"{m.address_of('mgmt0')}:{RAFT_PORT}",
                 "api": f"{m.address_of('mgmt0')}:{API_PORT}"} for m in plan.by_role("manager")]
    return {
        "self": manager.name,
        "replicas": replicas,
        "raft_password_file": secret_path(run_dir, "raft.password"),
        "admin_token_sha256": admin_token_sha256,
        "data_dir": os.path.join(node_dir(run_dir, manager), "data"),
        "openflow": {"listen_address": manager.address_of("mgmt0"), "port": OPENFLOW_PORT},
        "inventory": inventory(plan, agent_tokens_sha256).model_dump(mode="json"),
    }


def api_url(manager: Node) -> str:
    return f"http://{manager.address_of('mgmt0')}:{API_PORT}"


def cli_config(plan: LabPlan, run_dir: str) -> dict[str, Any]:
    """What `ananta` (the CLI) uses when a lab is up: the first replica, as admin."""
    first, *others = plan.by_role("manager")
    return {"url": api_url(first), "fallback_urls": [api_url(m) for m in others],
            "token_file": secret_path(run_dir, "admin.token"), "netns": first.namespace}


def _node_common(plan: LabPlan, node: Node, run_dir: str) -> dict[str, Any]:
    uplink = next(i for i in node.interfaces if i.name == "uplink")
    leaf = plan.nodes[node.leaf or ""]
    gateway = leaf.address_of(node.name)
    role = "mux" if node.role == "mux" else "hypervisor"
    return {
        "name": node.name,
        "ovs_rundir": node_dir(run_dir, node),
        "datapath_ids": {"int": dpid(role, node.index, "int"),
                         "phy": dpid(role, node.index, "phy")},
        "uplink": {"interface": "uplink", "address": uplink.address, "gateway": gateway,
                   "mtu": uplink.mtu},
        "managers": [f"{a}:{OPENFLOW_PORT}" for a in manager_addresses(plan)],
    }


def mux_config(plan: LabPlan, mux: Node, run_dir: str,
               md5_password: str | None = None) -> dict[str, Any]:
    """`md5_password`: the TCP MD5 key of its BGP session to its leaf (bgpd_conf's too)."""
    leaf = plan.nodes[mux.leaf or ""]
    bgp: dict[str, Any] = {
        "local_as": MUX_AS,
        "peers": [{"address": leaf.address_of(mux.name), "peer_as": leaf.asn}],
        "hold_time": plan.spec.bgp_hold_time,
    }
    if md5_password:
        bgp["md5_password"] = md5_password
    return {**_node_common(plan, mux, run_dir), "run_dir": node_dir(run_dir, mux), "bgp": bgp}


def hostagent_config(plan: LabPlan, hv: Node, run_dir: str) -> dict[str, Any]:
    vms = _vms_of(plan, hv)
    gateways = sorted({f"{vm.gateway}/24" for vm in vms if vm.gateway})
    return {
        **_node_common(plan, hv, run_dir),
        "vms": [{"name": vm.name, "interface": vm.name, "ofport": FIRST_VM_OFPORT + k}
                for k, vm in enumerate(vms)],
        "probe_addresses": gateways,
        "manager_api": [api_url(m) for m in plan.by_role("manager")],
        "agent_token_file": secret_path(run_dir, f"agent-{hv.name}.token"),
    }


def zebra_conf(router: Node) -> str:
    return f"hostname {router.name}\n"


# BFD between each leaf and its Muxes: a Mux that dies, freezes or loses its data path (its
# BFD packets cross its OVS) is out of the leaf's BGP in 3 x 100 ms instead of a hold time.
BFD_INTERVAL_MS, BFD_MULTIPLIER = 100, 3
BFD_PROFILE = "mux"


def _bfd_timers(indent: str) -> list[str]:
    return [f"{indent}transmit-interval {BFD_INTERVAL_MS}",
            f"{indent}receive-interval {BFD_INTERVAL_MS}",
            f"{indent}detect-multiplier {BFD_MULTIPLIER}"]


def frr_dir(run_dir: str, node: Node) -> str:
    """Where a node's FRR daemons keep their config, pid files and sockets (owned by frr)."""
    return node_dir(run_dir, node) if node.role == "router" else os.path.join(
        node_dir(run_dir, node), "frr")


def frr_daemons(plan: LabPlan, node: Node) -> tuple[str, ...]:
    """The FRR daemons a node runs: routers zebra and bgpd, plus bfdd where Muxes hang off
    them; Muxes zebra and bfdd (their BGP speaker is ExaBGP, which has no BFD)."""
    has_mux = any(peer.role == "mux" for peer, _, _ in plan.neighbors(node.name))
    if node.role == "router":
        return ("zebra", "bfdd", "bgpd") if has_mux else ("zebra", "bgpd")
    return ("zebra", "bfdd") if node.role == "mux" else ()


def bfdd_conf(plan: LabPlan, node: Node) -> str:
    """A leaf: the profile its bgpd asks for on Mux sessions. A Mux: a peer to its leaf."""
    lines = [f"hostname {node.name}", "!", "bfd"]
    if node.role == "router":
        lines += [f" profile {BFD_PROFILE}", *_bfd_timers("  "), " exit"]
    else:
        leaf = plan.nodes[node.leaf or ""]
        own = next(i for i in node.interfaces if i.name == "uplink").address or ""
        lines += [f" peer {leaf.address_of(node.name)} local-address {own.split('/')[0]}",
                  *_bfd_timers("  "), " exit"]
    return "\n".join([*lines, "exit", ""])


def bgpd_conf(plan: LabPlan, router: Node, mux_md5_password: str | None = None) -> str:
    """eBGP to every neighbour router and Mux, ECMP over any AS path, fast timers; sessions
    to Muxes (the load balancer's own speakers) authenticated with TCP MD5 when a password
    is given."""
    router_id = router.address_of(router.interfaces[0].name)
    lines = [
        "frr defaults datacenter",
        f"hostname {router.name}",
        "!",
        f"router bgp {router.asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " bgp bestpath as-path multipath-relax",
    ]
    for peer, peer_address, _ in plan.neighbors(router.name):
        if peer.role in ("router", "mux"):
            lines.append(f" neighbor {peer_address} remote-as {peer.asn}")
            hold = plan.spec.bgp_hold_time
            lines.append(f" neighbor {peer_address} timers {max(1, hold // 3)} {hold}")
            if peer.role == "mux":
                lines.append(f" neighbor {peer_address} bfd profile {BFD_PROFILE}")
                if mux_md5_password:
                    lines.append(f" neighbor {peer_address} password {mux_md5_password}")
    lines += [
        " address-family ipv4 unicast",
        "  redistribute connected",
        "  maximum-paths 16",
        " exit-address-family",
        "!",
    ]
    return "\n".join(lines) + "\n"
