"""A Mux dies (every process in its namespace SIGKILLed) under long-lived connections: the
routers move its flows to the other Mux after the BGP hold time, which picks the same DIPs
(same buckets, same hash), so no connection is reset. Then the Mux comes back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from ananta.topologies import chaos, lab

VIP = "203.0.113.10"
CONNECTIONS = 12


def test_killing_a_mux_resets_no_established_connection(running_lab: None) -> None:
    plan, services = lab.load_plan()
    clients = [subprocess.Popen(
        ["ip", "netns", "exec", plan.nodes["client1"].namespace, sys.executable, "-m",
         "ananta.topologies.keepalive", "--host", VIP, "--more", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(CONNECTIONS)]
    try:
        first = []
        for c in clients:
            assert c.stdout is not None
            first.append(json.loads(c.stdout.readline())["first"])
        chaos.signal_node(plan, "mux1", signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(5)  # hold time 3 s: the routers have moved to mux2
        results = []
        for c in clients:
            assert c.stdin is not None and c.stdout is not None
            c.stdin.write("go\n")
            c.stdin.flush()
            results.append(json.loads(c.stdout.readline()))
        print(f"{CONNECTIONS} connections checked {time.monotonic() - killed:.1f} s after "
              "mux1 was killed")
        for vm, result in zip(first, results, strict=True):
            assert result["errors"] == [] and result["then"] == [vm] * 5, result
    finally:
        for c in clients:
            c.kill()
        chaos.start_again(plan, "mux1", *chaos.MUX_DAEMONS)  # its OVS database survives
        lab.wait_ready(plan, services, timeout=60)
