"""Which real daemons run in which lab node, with which command line (pure).

Order matters: routers first, then each data-plane node's OVS, then the Manager, then the
node agents (which bootstrap their bridges and point them at the Manager), then the VMs'
servers. Detached daemons (FRR, OVS) are found again by their pid files and, in any case,
by `ip netns pids` when the lab goes down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ananta.topologies.configs import frr_daemons, frr_dir, node_dir
from ananta.topologies.spec import LabPlan, Node

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
FRR_LIBEXEC = "/usr/lib/frr"
VM_HTTP_PORT = 8080


@dataclass(frozen=True)
class Daemon:
    node: str
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    detaches: bool = False  # forks itself away; found by pidfile / netns pids
    log: str = ""
    setup: tuple[tuple[str, ...], ...] = field(default=())  # commands run before it


def ovs_env(run_dir: str, node: str) -> tuple[tuple[str, str], ...]:
    d = node_dir(run_dir, node)
    return (("OVS_RUNDIR", d), ("OVS_DBDIR", d), ("OVS_LOGDIR", d))


def frr(plan: LabPlan, node: Node, run_dir: str) -> list[Daemon]:
    d = frr_dir(run_dir, node)
    return [Daemon(node.name, prog, (
        f"{FRR_LIBEXEC}/{prog}", "-d", "-f", f"{d}/{prog}.conf", "-i", f"{d}/{prog}.pid",
        "-z", f"{d}/zserv.api", "--vty_socket", d, "-A", "127.0.0.1",
        "--log", f"file:{d}/{prog}.log"), detaches=True) for prog in frr_daemons(plan, node)]


def daemons(plan: LabPlan, run_dir: str, bindir: str, python: str) -> list[Daemon]:
    out: list[Daemon] = []
    for r in plan.by_role("router"):
        out += frr(plan, r, run_dir)
    for n in [*plan.by_role("mux"), *plan.by_role("hypervisor")]:
        d = node_dir(run_dir, n)
        env = ovs_env(run_dir, n.name)
        out.append(Daemon(n.name, "ovsdb-server", (
            "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
            f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
            "--detach", "--no-chdir"), env, detaches=True,
            setup=(("ovsdb-tool", "create", f"{d}/conf.db", OVS_SCHEMA),)))
        out.append(Daemon(n.name, "ovs-vswitchd", (
            "ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid",
            f"--log-file={d}/ovs-vswitchd.log", "--detach", "--no-chdir"), env, detaches=True,
            setup=(("ovs-vsctl", f"--db=unix:{d}/db.sock", "--no-wait", "init"),)))
    for role, program, config in (("manager", "ananta-manager", "manager.yaml"),
                                  ("mux", "ananta-mux", "mux.yaml"),
                                  ("hypervisor", "ananta-hostagent", "hostagent.yaml")):
        for n in plan.by_role(role):
            d = node_dir(run_dir, n)
            out.append(Daemon(n.name, program, (
                os.path.join(bindir, program), "--config", f"{d}/{config}"),
                log=f"{d}/{program}.log"))
    for m in plan.by_role("mux"):  # BFD to the leaf, once the agent has the uplink up
        out += frr(plan, m, run_dir)
    for vm in plan.by_role("vm"):
        d = node_dir(run_dir, vm)
        out.append(Daemon(vm.name, "http-server", (
            python, "-m", "ananta.topologies.vmserver", "--name", vm.name,
            "--port", str(VM_HTTP_PORT)), log=f"{d}/http-server.log"))
    return out
