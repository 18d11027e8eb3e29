"""The Manager cluster in the lab: VIPs through the REST API, leader loss during traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from ananta.topologies import configs, lab
from ananta.topologies.checks import serve_check
from ananta.topologies.daemons import daemons

API_VIP = "203.0.113.20"


def api(*args: str) -> dict:  # type: ignore[type-arg]
    plan, _ = lab.load_plan()
    return json.loads(lab.api(plan, *args, "--json"))


def test_vip_created_through_the_api_is_served_and_its_deletion_removes_it(
        running_lab: None) -> None:
    op = api("vip", "create", "api", "--tenant", "demo", "--address", API_VIP,
             "--endpoint", "tcp:80", "--backend", "10.1.0.12:8080", "--backend", "10.2.0.11:8080")
    assert op["status"] == "programmed", op
    assert op["programmed_at"] - op["committed_at"] < 2.0
    plan, services = lab.load_plan()
    lab.wait_ready(plan, services, 30)  # switches hold exactly what the cluster holds
    report = serve_check(API_VIP, count=40)
    assert report.failures == [] and set(report.served_by) == {"vm2", "vm3"}
    op = api("vip", "delete", "api", "--tenant", "demo")
    assert op["status"] == "programmed"
    plan, services = lab.load_plan()
    assert [v.name for v in services.vips] == ["web"]
    lab.wait_ready(plan, services, 30)  # ... and no flow or group of `api` is left anywhere
    gone = serve_check(API_VIP, count=3)
    assert gone.served_by == {} and len(gone.failures) == 3


def controller_roles(plan: lab.LabPlan, node: str) -> list[tuple[str, str]]:
    """(target, role) of every OpenFlow controller connection of a node's bridges."""
    out = lab.ns_run(plan, node, ["ovs-vsctl", "--format=json", "--", "--columns=target,role",
                                  "list", "controller"], env=lab.ovs_cmd_env(node))
    return sorted((row[0], row[1]) for row in json.loads(out)["data"])


def test_only_the_raft_leader_is_openflow_master(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    leader_ip = api("cluster")["leader"].split(":")[0]
    for node in ("mux1", "mux2", "hv1", "hv2"):
        roles = controller_roles(plan, node)
        assert len(roles) == 6, roles  # 2 bridges x 3 replicas
        for target, role in roles:
            assert role == ("master" if f":{leader_ip}:" in target else "slave"), roles


def manager_pid(plan: lab.LabPlan, name: str) -> int:
    with open(f"{configs.node_dir(lab.RUN_DIR, name)}/ananta-manager.pid") as fh:
        return int(fh.read())


def test_leader_killed_during_traffic(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    status = api("cluster")
    leader_raft = status["leader"]
    leader = next(m.name for m in plan.by_role("manager")
                  if leader_raft.startswith(f"{m.address_of('mgmt0')}:"))
    results: dict[str, object] = {}

    def traffic() -> None:
        out = lab.ns_run(plan, "client1", [sys.executable, "-m", "ananta.topologies.httpprobe",
                                           "--host", "203.0.113.10", "--count", "300"],
                         timeout=120)
        results.update(json.loads(out))

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(0.3)
    killed_at = time.monotonic()
    os.kill(manager_pid(plan, leader), signal.SIGKILL)
    # the next write succeeds (through any replica still up), once a new leader is elected
    deadline = time.monotonic() + 10
    while True:
        try:
            op = api("backend", "drain", "web", "tcp:80", "10.2.0.12", "--tenant", "demo")
            break
        except (lab.LabError, subprocess.CalledProcessError, RuntimeError) as exc:
            assert time.monotonic() < deadline, exc
            time.sleep(0.2)
    write_after = time.monotonic() - killed_at
    t.join(120)
    assert results["failures"] == [], results["failures"]
    assert op["status"] == "programmed", op
    assert write_after < 5.0, write_after
    new = api("cluster")
    assert new["leader"] != leader_raft and new["term"] > status["term"]
    # the killed replica comes back (the lab's other tests want all three)
    lab.start_daemon(plan, next(d for d in daemons(plan, lab.RUN_DIR, os.path.dirname(
        sys.executable), sys.executable) if d.node == leader and d.name == "ananta-manager"))
    new_ip = new["leader"].split(":")[0]
    # OVSDB publishes controller status every few seconds: wait for it to show the new master
    deadline = time.monotonic() + 15
    for node in ("mux1", "hv2"):
        while True:
            masters = [t for t, role in controller_roles(plan, node) if role == "master"]
            if len(masters) == 2 and all(f":{new_ip}:" in t for t in masters):
                break
            assert time.monotonic() < deadline, (node, masters, new, leader_raft)
            time.sleep(0.5)
    # the lab's other tests want the demo VIP as it was (10.2.0.12 active again)
    lab.api(plan, "apply", "-f", lab.DEMO_SERVICES, "--tenant", "demo")
