"""The iproute2/sysctl commands that build the lab's namespaces and links (pure).

Every command names one of the lab's own namespaces (`ip -n an-...`, `ip netns exec an-...`,
or `netns an-...` for both veth ends), so nothing here touches the machine's own network:
the unit tests check exactly that.
"""

from __future__ import annotations

from ananta.topologies.spec import LabPlan, Node

NS_PREFIX = "an-"


def _ns(plan: LabPlan, name: str) -> str:
    return plan.nodes[name].namespace


def _sysctl(node: Node, *settings: str) -> list[str]:
    return ["ip", "netns", "exec", node.namespace, "sysctl", "-qw", *settings]


def router_seed(node: Node) -> int:
    """A distinct, stable ECMP hash seed per router."""
    return 1 + sum(ord(c) * 31 ** i for i, c in enumerate(node.name)) % 0xFFFFFFF


def build_commands(plan: LabPlan) -> list[list[str]]:
    cmds: list[list[str]] = [["ip", "netns", "add", n.namespace] for n in plan.nodes.values()]
    for n in plan.nodes.values():
        cmds.append(["ip", "-n", n.namespace, "link", "set", "lo", "up"])
    for switch in plan.by_role("switch"):
        cmds.append(["ip", "-n", switch.namespace, "link", "add", "br-mgmt", "type", "bridge"])
    for link in plan.links:
        a_ns, b_ns = _ns(plan, link.a), _ns(plan, link.b)
        cmd = ["ip", "link", "add", link.a_if.name, "netns", a_ns, "mtu", str(link.a_if.mtu)]
        if link.a_if.mac:
            cmd += ["address", link.a_if.mac]
        cmd += ["type", "veth", "peer", "name", link.b_if.name, "netns", b_ns,
                "mtu", str(link.b_if.mtu)]
        if link.b_if.mac:
            cmd += ["address", link.b_if.mac]
        cmds.append(cmd)
    for node in plan.nodes.values():
        ns = node.namespace
        if node.role in ("router", "mux", "hypervisor", "manager", "switch"):
            cmds.append(_sysctl(node, "net.ipv6.conf.all.disable_ipv6=1",
                                "net.ipv6.conf.default.disable_ipv6=1"))
        if node.role == "router":
            # ECMP on the 5-tuple (policy 3, fields 0x37: addresses, protocol, ports), with a
            # seed of each router's own. Policy 1 would reuse the hash the client's socket put
            # on the packet at every hop, so every router would make the same choice and,
            # with next hops listed in a different order, all flows could land on one Mux.
            cmds.append(_sysctl(node, "net.ipv4.ip_forward=1",
                                "net.ipv4.fib_multipath_hash_policy=3",
                                "net.ipv4.fib_multipath_hash_fields=0x0037",
                                f"net.ipv4.fib_multipath_hash_seed={router_seed(node)}",
                                "net.ipv4.conf.all.rp_filter=0",
                                "net.ipv4.conf.default.rp_filter=0"))
        for iface in node.interfaces:
            if node.role == "switch" and iface.name != "br-mgmt":
                cmds.append(["ip", "-n", ns, "link", "set", iface.name, "master", "br-mgmt"])
            if node.role == "router":
                cmds.append(_sysctl(node, f"net.ipv4.conf.{iface.name}.rp_filter=0"))
            if iface.address and not iface.set_by_agent:
                cmds.append(["ip", "-n", ns, "addr", "add", iface.address, "dev", iface.name])
            if iface.tx_checksum_off:
                cmds.append(["ip", "netns", "exec", ns, "ethtool", "-K", iface.name, "tx", "off"])
            cmds.append(["ip", "-n", ns, "link", "set", iface.name, "up"])
        if node.gateway:
            cmds.append(["ip", "-n", ns, "route", "add", "default", "via", node.gateway])
    return cmds
