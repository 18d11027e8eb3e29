"""Fault scenarios on the running lab (imperative shell): `ananta chaos run SCENARIO`.

Each run: the load generator (topologies/loadgen.py) starts in client1 against the demo VIP
and the ledger writer (topologies/ledger.py) starts committing tenants; after a warm-up the
fault is injected; after `hold_s` it is repaired; the lab must be ready again (every switch
holds its desired flows, BGP settled); after a quiet tail the load and the ledger stop, and
topologies/faultreport.py says what the fault cost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ananta.shell import CommandFailed
from ananta.topologies import configs, lab
from ananta.topologies.daemons import Daemon, daemons
from ananta.topologies.faultreport import fault_cost, unmet_goals
from ananta.topologies.spec import LabPlan

VIP = "203.0.113.10"
VIP_NAME, ENDPOINT = "web", "tcp:80"
WARMUP_S, TAIL_S = 3.0, 3.0


@dataclass
class Run:
    """What a scenario acts on, and what it noted for its repair."""
    plan: LabPlan
    notes: dict[str, Any] = field(default_factory=dict)


# --- acting on the lab ----------------------------------------------------------------------

def lab_daemon(plan: LabPlan, node: str, name: str) -> Daemon:
    for d in daemons(plan, lab.RUN_DIR, os.path.dirname(sys.executable), sys.executable):
        if d.node == node and d.name == name:
            return d
    raise lab.LabError(f"no daemon {name} on {node}")


def pid_of(node: str, name: str) -> int:
    with open(os.path.join(configs.node_dir(lab.RUN_DIR, node), f"{name}.pid")) as fh:
        return int(fh.read().split()[0])


def kill_daemon(node: str, name: str, sig: int = signal.SIGKILL) -> None:
    pid = pid_of(node, name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # a daemon an earlier scenario restarted is this process's child: reap it, or it
        # stays a zombie that still answers kill(pid, 0)
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def start_again(plan: LabPlan, node: str, *names: str) -> None:
    """Start daemons that ran before: their state (OVS database, Raft journal) is kept."""
    for name in names:
        lab.start_daemon(plan, dataclasses.replace(lab_daemon(plan, node, name), setup=()))


def node_pids(plan: LabPlan, node: str) -> list[int]:
    out = lab.run(["ip", "netns", "pids", plan.nodes[node].namespace], check=False)
    return [int(p) for p in out.split()]


def signal_node(plan: LabPlan, node: str, sig: int) -> list[int]:
    pids = node_pids(plan, node)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a short-lived ovs-ofctl, gone
            os.kill(pid, sig)
    return pids


def leader(plan: LabPlan) -> str:
    address = json.loads(lab.api(plan, "cluster", "--json"))["leader"].split(":")[0]
    for m in plan.by_role("manager"):
        if m.address_of("mgmt0") == address:
            return m.name
    raise lab.LabError(f"no Manager replica has the leader's address {address}")


def backend_address(plan: LabPlan, vm: str) -> str:
    return str(plan.nodes[vm].address_of("eth0"))


def admin(plan: LabPlan, *args: str) -> str:
    return lab.api(plan, *args, "--json")


def link_to(plan: LabPlan, node: str, peer: str) -> str:
    """The name of `node`'s interface on its link to `peer`."""
    for link in plan.links:
        if link.a == node and link.b == peer:
            return link.a_if.name
        if link.b == node and link.a == peer:
            return link.b_if.name
    raise lab.LabError(f"no link between {node} and {peer}")


# --- the scenarios --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    inject: Callable[[Run], None]
    repair: Callable[[Run], None] | None
    hold_s: float
    dip_set_unchanged: bool = True
    exempt_vms: tuple[str, ...] = ()
    recovery_goal_s: float | None = None  # for the fault window
    prepare: Callable[[Run], None] | None = None
    cleanup: Callable[[Run], None] | None = None
    neighbour_goal: bool = False  # the load's VIP is a bystander: within 5% of its baseline


def _kill_leader(r: Run) -> None:
    r.notes["manager"] = leader(r.plan)
    kill_daemon(r.notes["manager"], "ananta-manager")


def _kill_follower(r: Run) -> None:
    lead = leader(r.plan)
    r.notes["manager"] = next(m.name for m in r.plan.by_role("manager") if m.name != lead)
    kill_daemon(r.notes["manager"], "ananta-manager")


def _restart_manager(r: Run) -> None:
    start_again(r.plan, r.notes["manager"], "ananta-manager")


def _kill_all_managers(r: Run) -> None:
    for m in r.plan.by_role("manager"):
        kill_daemon(m.name, "ananta-manager")


def _start_all_managers(r: Run) -> None:
    for m in r.plan.by_role("manager"):
        start_again(r.plan, m.name, "ananta-manager")


MUX_DAEMONS = ("ovsdb-server", "ovs-vswitchd", "ananta-mux", "zebra", "bfdd")


def _kill_mux(r: Run) -> None:
    signal_node(r.plan, "mux1", signal.SIGKILL)
    time.sleep(0.2)


def _start_mux(r: Run) -> None:
    start_again(r.plan, "mux1", *MUX_DAEMONS)


def _freeze_mux(r: Run) -> None:
    r.notes["frozen"] = signal_node(r.plan, "mux1", signal.SIGSTOP)


def _thaw_mux(r: Run) -> None:
    for pid in r.notes["frozen"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _stop_vswitchd(node: str) -> Callable[[Run], None]:
    return lambda r: kill_daemon(node, "ovs-vswitchd", signal.SIGTERM)


def _start_vswitchd(node: str) -> Callable[[Run], None]:
    return lambda r: start_again(r.plan, node, "ovs-vswitchd")


def _stop_hostagent(r: Run) -> None:
    kill_daemon("hv1", "ananta-hostagent", signal.SIGTERM)


def _start_hostagent(r: Run) -> None:
    start_again(r.plan, "hv1", "ananta-hostagent")


def _kill_vm(r: Run) -> None:
    signal_node(r.plan, "vm4", signal.SIGKILL)


def _start_vm(r: Run) -> None:
    start_again(r.plan, "vm4", "http-server")


def _mux_link(r: Run) -> tuple[str, str]:
    leaf = r.plan.nodes["mux1"].leaf
    assert leaf is not None
    return leaf, link_to(r.plan, leaf, "mux1")


def _link_down(r: Run) -> None:
    leaf, ifname = _mux_link(r)
    lab.ns_run(r.plan, leaf, ["ip", "link", "set", ifname, "down"])


def _link_up(r: Run) -> None:
    leaf, ifname = _mux_link(r)
    lab.ns_run(r.plan, leaf, ["ip", "link", "set", ifname, "up"])


def _remove_vm4(r: Run) -> None:
    admin(r.plan, "backend", "remove", VIP_NAME, ENDPOINT, backend_address(r.plan, "vm4"),
          "--tenant", "demo")


def _add_vm4(r: Run, wait: bool = True) -> None:
    admin(r.plan, "backend", "add", VIP_NAME, ENDPOINT,
          f"{backend_address(r.plan, 'vm4')}:8080:100", "--tenant", "demo",
          *(() if wait else ("--no-wait",)))


def _ensure_vm4(r: Run) -> None:
    """vm4 back in the demo VIP if a run stopped half-way (it is there if the run ended)."""
    try:
        _add_vm4(r, wait=False)
    except CommandFailed as exc:
        if "duplicates" not in exc.output:
            raise


def _kill_mux_and_add_vm4(r: Run) -> None:
    _kill_mux(r)
    _add_vm4(r, wait=False)  # committed; a dead Mux cannot confirm it programmed it


FLOOD_VIP, FLOOD_PPS, FLOOD_LIMIT_PPS, FLOOD_BACKEND_PORT = "203.0.113.30", 2000, 200, 8081


def _flood_vip(limit_pps: int | None) -> Callable[[Run], None]:
    """Another tenant's service on the same hosts: its own port on the VMs, where nothing
    listens (each SYN that reaches a VM is answered by a RST), not the demo VIP's listening
    sockets, whose SYN queue a flood would fill: that is the backends' exposure, not the
    load balancer's. No health check, so its backends take the flood."""
    def create(r: Run) -> None:
        vip: dict[str, Any] = {
            "name": "flooded", "tenant": "demo", "address": FLOOD_VIP,
            "endpoints": [{"protocol": "tcp", "port": 80, "health_check": {"type": "none"},
                           "backends": [{"address": backend_address(r.plan, vm),
                                         "port": FLOOD_BACKEND_PORT}
                                        for vm in ("vm1", "vm2", "vm3", "vm4")]}]}
        if limit_pps is not None:
            vip["rate_limit_pps"] = limit_pps
        path = os.path.join(lab.RUN_DIR, "flooded.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"vips": [vip]}, fh)  # (JSON is YAML)
        admin(r.plan, "apply", "-f", path, "--tenant", "demo")
    return create


def _delete_flood_vip(r: Run) -> None:
    try:
        admin(r.plan, "vip", "delete", "flooded", "--tenant", "demo")
    except CommandFailed as exc:
        if "no VIP" not in exc.output:  # (a run that stopped before creating it)
            raise


def _start_flood(r: Run) -> None:
    r.notes["flood"] = subprocess.Popen(
        ["ip", "netns", "exec", r.plan.nodes["client1"].namespace, "hping3", "--syn",
         "--rand-source", "-p", "80", "-i", f"u{1_000_000 // FLOOD_PPS}", FLOOD_VIP],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_flood(r: Run) -> None:
    flood: subprocess.Popen[bytes] = r.notes["flood"]
    flood.terminate()
    try:
        flood.wait(5)
    except subprocess.TimeoutExpired:
        flood.kill()


SCENARIOS = {s.name: s for s in [
    Scenario("manager-leader-kill", "SIGKILL the Raft leader's Manager; restart it 5 s later",
             _kill_leader, _restart_manager, 5.0),
    Scenario("manager-follower-kill", "SIGKILL a follower Manager; restart it 5 s later",
             _kill_follower, _restart_manager, 5.0),
    Scenario("managers-restart-all", "SIGKILL all three Managers; start them again at once",
             _kill_all_managers, _start_all_managers, 0.5),
    Scenario("mux-kill", "SIGKILL every process of mux1 (OVS, agent, ExaBGP); restart after 6 s",
             _kill_mux, _start_mux, 6.0, recovery_goal_s=3.0),
    Scenario("mux-freeze", "SIGSTOP every process of mux1; SIGCONT after 6 s",
             _freeze_mux, _thaw_mux, 6.0, recovery_goal_s=3.0),
    Scenario("mux-ovs-restart", "restart ovs-vswitchd on mux1 (its flows are lost)",
             _stop_vswitchd("mux1"), _start_vswitchd("mux1"), 1.0, recovery_goal_s=3.0),
    Scenario("hostagent-restart", "restart the host agent on hv1",
             _stop_hostagent, _start_hostagent, 1.0),
    Scenario("hv-ovs-restart", "restart ovs-vswitchd on hv1 (its flows and conntrack are lost)",
             _stop_vswitchd("hv1"), _start_vswitchd("hv1"), 1.0),
    Scenario("backend-vm-kill", "SIGKILL every process of vm4 (a backend); restart after 6 s",
             _kill_vm, _start_vm, 6.0, dip_set_unchanged=False, exempt_vms=("vm4",)),
    Scenario("mux-link-down", "take leaf1's link to mux1 down; up again after 6 s",
             _link_down, _link_up, 6.0, recovery_goal_s=3.0),
    Scenario("backend-churn", "remove backend vm4 under load; add it back 4 s later",
             _remove_vm4, _add_vm4, 4.0, dip_set_unchanged=False, exempt_vms=("vm4",)),
    Scenario("mux-kill-during-change",
             "vm4 out of the VIP; SIGKILL mux1 and add vm4 at once; restart mux1 after 6 s",
             _kill_mux_and_add_vm4, _start_mux, 6.0, dip_set_unchanged=False,
             prepare=_remove_vm4, cleanup=_ensure_vm4),
    Scenario("syn-flood", f"hping3 SYN flood ({FLOOD_PPS} pps, random sources) on another "
             "VIP for 8 s, while the load runs on the demo VIP", _start_flood, _stop_flood, 8.0,
             neighbour_goal=True, prepare=_flood_vip(None), cleanup=_delete_flood_vip),
    Scenario("syn-flood-rate-limited", f"the same flood on a VIP whose tenant limit "
             f"(rate_limit_pps) is {FLOOD_LIMIT_PPS}: every Mux meters it before the hosts",
             _start_flood, _stop_flood, 8.0, neighbour_goal=True,
             prepare=_flood_vip(FLOOD_LIMIT_PPS), cleanup=_delete_flood_vip),
]}


# --- one run --------------------------------------------------------------------------------

def _start_load(plan: LabPlan, argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", plan.nodes["client1"].namespace,
                             sys.executable, "-m", "ananta.topologies.loadgen", "--host", VIP,
                             *argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # {"started": ...}: the workers are running
    return proc


def _ledger(plan: LabPlan, action: str, prefix: str) -> subprocess.Popen[str]:
    host = plan.by_role("manager")[-1]
    urls = [arg for m in plan.by_role("manager") for arg in ("--url", configs.api_url(m))]
    env = {**os.environ, "ANANTA_TOKEN": lab._read_secret(
        configs.secret_path(lab.RUN_DIR, "admin.token"))}
    return subprocess.Popen(["ip", "netns", "exec", host.namespace, sys.executable, "-m",
                             "ananta.topologies.ledger", action, "--prefix", prefix, *urls],
                            env=env, stdout=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def _ledger_once(plan: LabPlan, action: str, prefix: str) -> Any:
    proc = _ledger(plan, action, prefix)
    out, _ = proc.communicate(timeout=60)
    return json.loads(out)


def wait_ready(timeout: float = 120) -> None:
    """Until a Manager cluster answers with a leader, then until the lab serves what it holds.

    The cluster comes first: after every Manager was restarted, no replica answers for the
    seconds their processes take to start, and asking for the VIPs then would fail at once.
    """
    deadline = time.monotonic() + timeout
    plan, _ = lab.load_plan(with_services=False)
    lab.wait_cluster(plan, timeout)
    plan, services = lab.load_plan()
    lab.wait_ready(plan, services, max(1.0, deadline - time.monotonic()))


def run(name: str, say: Callable[[str], None] = print,
        load_args: tuple[str, ...] = ()) -> dict[str, Any]:
    scenario = SCENARIOS[name]
    plan, _ = lab.load_plan()
    r = Run(plan)
    wait_ready(60)
    prefix = f"chaos{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[str]] = []
    repaired = True
    try:
        if scenario.prepare:
            scenario.prepare(r)
            wait_ready(60)
        load = _start_load(plan, list(load_args))
        procs.append(load)
        ledger = _ledger(plan, "write", prefix)
        procs.append(ledger)
        assert ledger.stdout is not None
        json.loads(ledger.stdout.readline())
        time.sleep(WARMUP_S)
        say(f"{name}: {scenario.summary}")
        fault_at = time.time()
        repaired = False
        scenario.inject(r)
        time.sleep(max(0.0, fault_at + scenario.hold_s - time.time()))
        repair_at = time.time() if scenario.repair else None
        if scenario.repair:
            scenario.repair(r)
        repaired = True
        say(f"{name}: repaired {time.time() - fault_at:.1f} s after the fault; waiting "
            "until the lab is ready")
        wait_ready(120)
        ready_at = time.time()
        time.sleep(TAIL_S)
        written = _finish(ledger)
        loaded = _finish(load)
    finally:  # leave the lab as the scenario found it, whatever happened
        for p in procs:
            if p.poll() is None:
                p.kill()
        if not repaired and scenario.repair:
            scenario.repair(r)
        if scenario.cleanup:
            scenario.cleanup(r)
    present = _ledger_once(plan, "check", prefix)
    _ledger_once(plan, "clean", prefix)
    cost = fault_cost(loaded, fault_at, repair_at, frozenset(scenario.exempt_vms),
                      [n for n, _ in written["acked"]], present, written["longest_gap_s"])
    return {"scenario": name, "summary": scenario.summary,
            "dip_set_unchanged": scenario.dip_set_unchanged,
            "recovery_goal_s": scenario.recovery_goal_s,
            "ready_after_s": round(ready_at - fault_at, 2),
            "cost": cost.as_dict(),
            "unmet": unmet_goals(cost, scenario.dip_set_unchanged, scenario.recovery_goal_s,
                                 scenario.neighbour_goal),
            "failures": loaded["failures"][:50], "stalls": loaded["stalls"][:50]}
