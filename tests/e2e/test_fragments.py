"""IP fragments in the lab: UDP datagrams of up to 9,000 bytes (up to 7 fragments each way)
to a VIP come back whole, and every flow (5-tuple) is answered by one VM whatever the size
of its datagrams: unfragmented, first and later fragments all reach the same DIP, through
either Mux (mux/fragments.py, controller/compile_mux.py), and the host NATs them both ways
through conntrack reassembly (controller/compile_host.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from ananta.controller.flows import FlowKind
from ananta.topologies import lab
from ananta.topologies.checks import UplinkCapture, kind_packets

pytestmark = pytest.mark.e2e

UDP_VIP, VIP_PORT, ECHO_PORT = "203.0.113.20", 53, 5353
VMS = ("vm1", "vm2", "vm3", "vm4")
ADDRESSES = ("10.1.0.11", "10.1.0.12", "10.2.0.11", "10.2.0.12")


def _fragment_counts(plan: lab.LabPlan) -> int:
    """Packets the Muxes' fragment flows handled (to the agent, and back from it)."""
    return sum(kind_packets(plan, m, FlowKind.FRAGMENT) for m in ("mux1", "mux2"))


def test_fragmented_datagrams_reach_their_flows_dip_whole(running_lab: None) -> None:
    with open(lab.DEMO_SERVICES) as fh:
        data = yaml.safe_load(fh)
    original = yaml.safe_dump(data)
    data["vips"].append({
        "name": "echo", "tenant": "demo", "address": UDP_VIP,
        "endpoints": [{"protocol": "udp", "port": VIP_PORT, "backends": [
            {"address": a, "port": ECHO_PORT, "weight": 100} for a in ADDRESSES]}]})
    plan, _ = lab.load_plan()
    servers = [subprocess.Popen(["ip", "netns", "exec", plan.nodes[vm].namespace,
                                 sys.executable, "-m", "ananta.topologies.udpecho", "serve",
                                 "--port", str(ECHO_PORT), "--name", vm])
               for vm in VMS]
    try:
        lab.apply_services(yaml.safe_dump(data), "with-udp-echo")
        time.sleep(0.5)
        before = _fragment_counts(plan)
        out = lab.ns_run(plan, "client1", [
            sys.executable, "-m", "ananta.topologies.udpecho", "ask", "--dst", UDP_VIP,
            "--port", str(VIP_PORT), "--sizes", "300,4000,9000,1472,1473", "--count", "10",
            "--flows", "24"], timeout=300)
        result = json.loads(out)
        print(result)
        assert (result["whole"], result["lost"], result["wrong"]) == (240, 0, 0), result
        assert result["sources"] == [f"{UDP_VIP}:{VIP_PORT}"]
        assert result["flows_split"] == 0  # each 5-tuple: one VM, fragmented or not
        assert len(result["served_by"]) >= 3  # and the flows spread over the backends
        # 96 datagrams of 4000 and 9000 bytes: at least 3 fragments each went through (OVS
        # adds datapath flows' packets to their OpenFlow flows' counters every ~0.5-1 s)
        deadline = time.monotonic() + 5
        while (counted := _fragment_counts(plan) - before) < 96 * 3:
            assert time.monotonic() < deadline, counted
            time.sleep(0.25)
    finally:
        for s in servers:
            s.kill()
            s.wait()
        lab.apply_services(original, "demo")


def test_a_vms_fragmented_datagrams_leave_and_return_through_snat(running_lab: None) -> None:
    """A VM's own UDP flow to the outside, with datagrams of up to 9,000 bytes: its fragments
    leave SNATed (the host's conntrack reassembles, NATs and copies the result to every
    fragment), the server's fragmented replies to VIP:port come back through a Mux's agent
    to the DIP's host, and every datagram arrives whole. No fragment leaves as the DIP."""
    plan, _ = lab.load_plan()
    dip, vip, outside, port = "10.1.0.11", "203.0.113.10", "198.51.100.2", 9300
    server = subprocess.Popen(["ip", "netns", "exec", plan.nodes["client1"].namespace,
                               sys.executable, "-m", "ananta.topologies.udpecho", "serve",
                               "--port", str(port), "--name", "outside"])
    leaks, snated = UplinkCapture(plan, "hv1", dip), UplinkCapture(plan, "hv1", vip)
    try:
        time.sleep(0.5)
        out = lab.ns_run(plan, "vm1", [
            sys.executable, "-m", "ananta.topologies.udpecho", "ask", "--dst", outside,
            "--port", str(port), "--sizes", "300,4000,9000", "--count", "10", "--flows", "10"],
            timeout=300)
        result = json.loads(out)
        print(result)
        assert (result["whole"], result["lost"], result["wrong"]) == (100, 0, 0), result
        assert result["sources"] == [f"{outside}:{port}"]
    finally:
        server.kill()
        server.wait()
        time.sleep(0.3)
        leaked, left = leaks.stop(), snated.stop()
    assert leaked == 0
    # per flow: 4 datagrams of 300 B, 3 of 4,000 (3 fragments) and 3 of 9,000 (7 fragments)
    assert left >= 10 * (4 + 3 * 3 + 3 * 7), left
