"""The functional core stays pure, and every compiled message encodes."""

from __future__ import annotations

import ast
import pathlib
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from ananta.controller import ofmsg
from ananta.controller.desired import desired_programs
from ananta.controller.model import Services
from ananta.controller.snat import SnatBlock
from tests.unit.fixtures import default_inventory, demo_services

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "ananta/config.py", "ananta/bridges.py", "ananta/node.py",
    "controller/model.py", "controller/config.py", "controller/flows.py",
    "controller/pipeline.py", "controller/compile_mux.py", "controller/compile_host.py",
    "controller/desired.py", "controller/reconcile.py", "controller/state.py",
    "controller/ledger.py", "ananta/apply_plan.py", "ananta/ofctl_dump.py",
    "controller/health.py", "hostagent/probe.py",
    "bgp/commands.py", "mux/config.py", "mux/programmed.py", "hostagent/config.py",
    "topologies/spec.py", "topologies/configs.py", "topologies/netns.py",
    "topologies/daemons.py", "topologies/faultreport.py", "controller/snat_hold.py",
]
FORBIDDEN = ("socket", "subprocess", "os_ken", "pysyncobj", "mininet", "threading",
             "ananta.shell", "random", "time")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (
                f"{module} imports {name}")


def test_every_compiled_flow_and_group_encodes() -> None:
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)
    count = 0
    services = demo_services()
    services = services.model_copy(update={"vips": [
        services.vips[0].model_copy(update={"rate_limit_pps": 5000})]})
    meters = 0
    snat = {be.address: (SnatBlock(services.vips[0].address, 1024 + 256 * i, 256, be.address),)
            for i, be in enumerate(services.vips[0].endpoints[0].backends)}
    for program in desired_programs(services, default_inventory(), snat=snat).values():
        for meter in program.meters:
            for msg in (ofmsg.meter_add(dp, meter), ofmsg.meter_delete(dp, meter.meter_id)):
                msg.xid = 1
                msg.serialize()
            meters += 1
        for group in program.groups:
            msg = ofmsg.group_add(dp, group)
            msg.xid = 1
            msg.serialize()
            count += 1
        for flow in program.flows:
            msg = ofmsg.flow_add(dp, flow)
            msg.xid = 1
            msg.serialize()
            assert msg.cookie == flow.cookie
            count += 1
    # per Mux: the VIP's and the fragment meter; and each backend VM's SNAT-wait meter
    assert count > 20 and meters == 2 * 2 + 4


def test_selection_method_property_is_laid_out_as_ovs_parses_it() -> None:
    raw = ofmsg.SelectionMethodProperty(
        "hash", ("ipv4_src", "ipv4_dst", "ip_proto", "tcp_src", "tcp_dst")).serialize()
    length = int.from_bytes(raw[2:4], "big")
    assert length == 40 + (4 + 4) * 2 + (4 + 1) + (4 + 2) * 2  # headers + all-ones values
    assert len(raw) % 8 == 0 and raw[16:20] == b"hash"


def test_group_mods_encode_to_the_bytes_os_ken_itself_writes() -> None:
    """EncodedBucket copies bytes encoded once per bucket: the message must be os-ken's own."""
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)
    services = demo_services()
    data = services.model_dump(mode="json")
    for i, be in enumerate(data["vips"][0]["endpoints"][0]["backends"]):
        be["weight"] = 100 + i
    weighted = Services.model_validate(data)
    groups = [g for s in (services, weighted)
              for p in desired_programs(s, default_inventory()).values() for g in p.groups]
    assert groups and min(len(g.buckets) for g in groups) == 256
    for group in groups:
        for command in (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY):
            ours = ofmsg.group_mod(dp, group, command)
            theirs = parser.OFPGroupMod(
                dp, command=command, type_=ofp.OFPGT_SELECT, group_id=group.group_id,
                buckets=[ofmsg.bucket(b) for b in group.buckets],
                properties=[ofmsg.SelectionMethodProperty("dp_hash", ())])
            for msg in (ours, theirs):
                msg.xid = 7
                msg.serialize()
            assert bytes(ours.buf) == bytes(theirs.buf)


def test_a_plan_goes_to_the_switch_as_one_atomic_ordered_bundle() -> None:
    """The cached bytes, framed as a bundle, are byte for byte what os-ken encodes for the
    same messages and xids (inner xid = outer, as OpenFlow requires)."""
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1)
    program = desired_programs(demo_services(), default_inventory())
    mux_int = next(p for p in program.values() if p.groups)
    group = next(iter(mux_int.groups))
    flows = sorted(mux_int.flows, key=lambda f: f.cookie)[:3]
    ours = ofmsg.bundle(2**32 + 5, [ofmsg.encoded_group_mod(group, ofp.OFPGC_ADD)]
                        + [ofmsg.encoded_flow_add(f) for f in flows]
                        + [ofmsg.encoded_flow_delete(f.table, f.priority, f.cookie, f.match)
                           for f in flows[:1]] + [ofmsg.encoded_group_delete(9)],
                        iter(range(10, 100)).__next__)
    flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
    inner = ([ofmsg.group_add(dp, group)] + [ofmsg.flow_add(dp, f) for f in flows]
             + [ofmsg.flow_delete_strict(dp, f.table, f.priority, f.cookie, f.match)
                for f in flows[:1]] + [ofmsg.group_delete(dp, 9)])
    theirs = ([parser.OFPBundleCtrlMsg(dp, 5, ofp.OFPBCT_OPEN_REQUEST, flags, [])]
              + [parser.OFPBundleAddMsg(dp, 5, flags, m, []) for m in inner]
              + [parser.OFPBundleCtrlMsg(dp, 5, ofp.OFPBCT_COMMIT_REQUEST, flags, [])])
    for xid, m in enumerate(theirs, 10):
        m.set_xid(xid)
        m.serialize()
    assert ours == [bytes(m.buf) for m in theirs]
    assert ofmsg.bundle(6, [], iter(range(10)).__next__) == []


def test_a_message_encoded_once_is_sent_with_each_xid() -> None:
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=1, xid=0xFFFFFFFE)
    program = desired_programs(demo_services(), default_inventory())
    group = next(g for p in program.values() for g in p.groups)
    cached = ofmsg.encoded_group_mod(group, ofp.OFPGC_MODIFY)
    assert ofmsg.encoded_group_mod(group, ofp.OFPGC_MODIFY) is cached
    for expected in (0xFFFFFFFF, 0, 1):  # os-ken's count, wrapping
        xid = ofmsg.take_xid(dp)
        assert xid == expected
        fresh = ofmsg.group_modify(dp, group)
        fresh.set_xid(xid)
        fresh.serialize()
        assert ofmsg.with_xid(cached, xid) == bytes(fresh.buf)
