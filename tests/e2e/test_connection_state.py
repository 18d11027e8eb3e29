"""A live connection keeps its backend when that backend is drained (Mux connection state)."""

from __future__ import annotations

import json
import subprocess
import sys

from ananta.topologies import lab
from ananta.topologies.checks import serve_check

VIP = "203.0.113.10"
DIPS = {"vm1": "10.1.0.11", "vm2": "10.1.0.12", "vm3": "10.2.0.11", "vm4": "10.2.0.12"}


def test_draining_the_backend_of_a_live_connection_does_not_break_it(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    client = subprocess.Popen(
        ["ip", "netns", "exec", plan.nodes["client1"].namespace, sys.executable, "-m",
         "ananta.topologies.keepalive", "--host", VIP, "--more", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdin is not None
    first = json.loads(client.stdout.readline())["first"]
    try:
        op = json.loads(lab.api(plan, "backend", "drain", "web", "tcp:80", DIPS[first],
                                "--tenant", "demo", "--json"))
        assert op["status"] == "programmed", op
        # new connections no longer reach the drained backend ...
        report = serve_check(VIP, count=40)
        assert report.failures == [] and first not in report.served_by, report.served_by
        # ... and the live one goes on with it
        client.stdin.write("go\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        assert result["errors"] == [] and result["then"] == [first] * 10, result
    finally:
        client.kill()
        lab.api(plan, "apply", "-f", lab.DEMO_SERVICES, "--tenant", "demo")
