"""The lab spec expands into a consistent plan, configs the daemons accept, safe commands."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from ananta.config import InvalidConfig, parse, parse_yaml_text
from ananta.controller.config import ManagerConfig, check_manager_config
from ananta.controller.model import check_inventory
from ananta.hostagent.config import HostAgentConfig
from ananta.mux.config import MuxConfig
from ananta.topologies import configs
from ananta.topologies.daemons import daemons
from ananta.topologies.netns import NS_PREFIX, build_commands
from ananta.topologies.spec import LabSpec, build_plan

RUN = "/run/ananta/test"


def test_default_lab_has_the_asked_for_nodes() -> None:
    plan = build_plan(LabSpec())
    roles = Counter(n.role for n in plan.nodes.values())
    assert roles == {"router": 5, "mux": 2, "hypervisor": 2, "vm": 4, "client": 1,
                     "manager": 3, "switch": 1}
    assert {m.leaf for m in plan.by_role("mux")} == {"leaf1", "leaf2"}


@pytest.mark.parametrize("spec", [LabSpec(), LabSpec(spines=3, leaves=4, muxes=4,
                                                     hypervisors=3, vms_per_hypervisor=3)])
def test_addresses_and_names_are_unique_and_valid(spec: LabSpec) -> None:
    plan = build_plan(spec)
    addresses = [a for n in plan.nodes.values() for a in n.addresses]
    assert len(addresses) == len(set(addresses))
    for a in addresses:
        ipaddress.IPv4Interface(a)
    for node in plan.nodes.values():
        names = [i.name for i in node.interfaces]
        assert len(names) == len(set(names)), node.name
        assert all(1 <= len(n) <= 15 for n in names)
    assert check_inventory(configs.inventory(plan)) == []


def test_every_command_stays_inside_the_labs_namespaces() -> None:
    plan = build_plan(LabSpec())
    for argv in build_commands(plan):
        assert argv[0] == "ip"
        if argv[1:3] in (["netns", "add"], ["netns", "exec"]):
            assert argv[3].startswith(NS_PREFIX), argv
        elif argv[1] == "-n":
            assert argv[2].startswith(NS_PREFIX), argv
        else:  # veth creation: both ends are placed in lab namespaces
            assert argv[1:3] == ["link", "add"], argv
            targets = [argv[i + 1] for i, w in enumerate(argv) if w == "netns"]
            assert len(targets) == 2 and all(t.startswith(NS_PREFIX) for t in targets), argv
    for d in daemons(plan, RUN, "/venv/bin", "/venv/bin/python"):
        assert d.node in plan.nodes


def test_generated_configs_are_accepted_by_each_daemon() -> None:
    plan = build_plan(LabSpec())
    for node in plan.by_role("manager"):
        manager = parse(ManagerConfig, configs.manager_config(plan, node, RUN, "0" * 64), "m")
        assert len(manager.inventory.hosts) == 2 and len(manager.replicas) == 3
        assert manager.me.name == node.name
        assert check_manager_config(manager) == []
    addresses = {f"{m.address_of('mgmt0')}:6653" for m in plan.by_role("manager")}
    for mux in plan.by_role("mux"):
        cfg = parse(MuxConfig, configs.mux_config(plan, mux, RUN), mux.name)
        assert set(cfg.managers) == addresses
        leaf = plan.nodes[mux.leaf or ""]
        assert cfg.bgp.peers[0].peer_as == leaf.asn
        assert cfg.uplink.gateway == leaf.address_of(mux.name)
    for hv in plan.by_role("hypervisor"):
        cfg = parse(HostAgentConfig, configs.hostagent_config(plan, hv, RUN), hv.name)
        assert [v.name for v in cfg.vms] == [
            v.name for v in plan.by_role("vm") if v.hypervisor == hv.name]


def test_bgp_config_peers_over_every_router_and_mux_link() -> None:
    plan = build_plan(LabSpec())
    leaf = plan.nodes["leaf1"]
    conf = configs.bgpd_conf(plan, leaf)
    assert "router bgp 65011" in conf and "maximum-paths 16" in conf
    assert "bgp bestpath as-path multipath-relax" in conf
    peers = [line.split()[1] for line in conf.splitlines() if "remote-as" in line]
    assert sorted(peers) == sorted(a for n, a, _ in plan.neighbors("leaf1")
                                   if n.role in ("router", "mux"))
    # sessions to Muxes (only) carry the TCP MD5 password, the same the Mux's ExaBGP gets
    signed = configs.bgpd_conf(plan, leaf, "pw-123")
    muxes = sorted(a for n, a, _ in plan.neighbors("leaf1") if n.role == "mux")
    assert sorted(line.split()[1] for line in signed.splitlines() if " password " in line) == (
        muxes)
    assert " password " not in conf
    mux = plan.nodes["mux1"]
    assert configs.mux_config(plan, mux, RUN, "pw-123")["bgp"]["md5_password"] == "pw-123"
    assert "md5_password" not in configs.mux_config(plan, mux, RUN)["bgp"]


def test_bad_spec_is_refused_with_the_key() -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_yaml_text(LabSpec, "spines: 0\nflavour: x\n", "spec.yaml")
    text = str(exc.value)
    assert "spines: Input should be greater than or equal to 1" in text
    assert "flavour: unknown key" in text
