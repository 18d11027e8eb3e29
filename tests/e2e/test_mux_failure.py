"""A Mux dies (every process in its namespace SIGKILLed) under long-lived connections: the
routers move its flows to the other Mux after the BGP hold time, which picks the same DIPs
(same buckets, same hash), so no connection is reset. Then the Mux comes back."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

from ananta.shell import run
from ananta.topologies import lab
from ananta.topologies.daemons import daemons

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
        for pid in run(["ip", "netns", "pids", plan.nodes["mux1"].namespace]).split():
            with contextlib.suppress(ProcessLookupError):  # (a short-lived ovs-ofctl, gone)
                os.kill(int(pid), signal.SIGKILL)
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
        for d in daemons(plan, lab.RUN_DIR, os.path.dirname(sys.executable), sys.executable):
            if d.node == "mux1":  # its OVS database survives: no `ovsdb-tool create` again
                lab.start_daemon(plan, dataclasses.replace(d, setup=()))
        lab.wait_ready(plan, services, timeout=60)
