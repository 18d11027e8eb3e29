"""SNAT in the lab: a VM's outbound connections to an outside server leave as VIP:port of
its block, their return traffic comes back through a Mux, and a burst of 1,000 succeeds."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ananta.topologies import lab

VIP, DIP, OUTSIDE, PORT = "203.0.113.10", "10.1.0.11", "198.51.100.2", 9000


def test_outbound_connections_leave_as_vip_ports_and_come_back_through_a_mux(
        running_lab: None) -> None:
    plan, _ = lab.load_plan()
    block = next(b for b in json.loads(lab.api(plan, "snat", "--json")) if b["dip"] == DIP)
    server = subprocess.Popen(["ip", "netns", "exec", plan.nodes["client1"].namespace,
                               sys.executable, "-m", "ananta.topologies.snatcheck", "serve",
                               "--port", str(PORT)])
    try:
        time.sleep(0.5)
        out = lab.ns_run(plan, "vm1", [sys.executable, "-m", "ananta.topologies.snatcheck",
                                       "connect", "--host", OUTSIDE, "--port", str(PORT),
                                       "--count", "1000", "--parallel", "50"], timeout=120)
        result = json.loads(out)
        print({k: v for k, v in result.items() if k != "ports"})
        assert result["failures"] == [], result["failures"][:5]
        assert result["seen_from"] == {VIP: 1000}
        assert all(block["start"] <= p <= block["end"] for p in result["ports"])
        # the return traffic came through the Muxes' SNAT return flows for this block
        returned = 0
        for m in ("mux1", "mux2"):
            dump = lab.ns_run(plan, m, ["ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int",
                                        f"table=0,tcp,nw_dst={VIP},tp_dst={block['start']}"
                                        f"/0xff00"], env=lab.ovs_cmd_env(m))
            returned += sum(int(x.split("=")[1].rstrip(","))
                            for x in dump.split() if x.startswith("n_packets="))
        assert returned >= 1000, returned
    finally:
        server.kill()
