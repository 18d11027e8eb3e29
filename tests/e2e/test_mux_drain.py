"""`ananta mux drain`: a Mux withdraws its VIPs from BGP, keeps forwarding what routers still
send it until they stop, and no request fails; undrained, it serves again."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ananta.topologies import lab
from ananta.topologies.checks import serve_check

VIP = "203.0.113.10"


def test_draining_a_mux_fails_no_request(running_lab: None) -> None:
    plan, services = lab.load_plan()
    load = subprocess.Popen(
        ["ip", "netns", "exec", plan.nodes["client1"].namespace, sys.executable, "-m",
         "ananta.topologies.httpprobe", "--host", VIP, "--count", "1500"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        out = json.loads(lab.api(plan, "mux", "drain", "mux1", "--json", timeout=90))
        print(f"mux1 drained {time.monotonic() - started:.1f} s after the request")
        assert out["drained"] is True
        result = json.loads(load.communicate(timeout=120)[0])
    finally:
        load.kill()
    try:
        assert result["failures"] == [], result["failures"][:5]
        assert result["sent"] == 1500
        after = serve_check(VIP, count=60)
        assert after.failures == [] and after.mux_endpoint_packets["mux1"] == 0, after
        muxes = {m["name"]: m for m in json.loads(lab.api(plan, "mux", "list", "--json"))}
        assert muxes["mux1"]["draining"] is True and muxes["mux2"]["draining"] is False
    finally:
        lab.api(plan, "mux", "undrain", "mux1")
    deadline = time.monotonic() + 20
    while lab.route_problems(plan, services):
        assert time.monotonic() < deadline, lab.route_problems(plan, services)
        time.sleep(0.5)
    assert serve_check(VIP, count=60).mux_endpoint_packets["mux1"] > 0
