"""The lab runtime (imperative shell): build, start, check and tear down the Clos lab.

Namespaces are named `an-<node>` (iproute2 named namespaces, so `ananta lab exec` and
`ananta lab down` find them again from any later process, even after a crash).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ananta.config import load_yaml_file, parse_yaml_text
from ananta.controller.desired import desired_programs, switch_targets
from ananta.controller.flows import is_ours
from ananta.controller.model import Services, check_services, endpoint_key
from ananta.controller.slot_table import SlotTable
from ananta.controller.slot_table import decode as decode_table
from ananta.controller.snat import SnatBlock, blocks_by_dip
from ananta.ofctl_dump import GroupSummary, cookies_in_flow_dump, group_summary, groups_in_dump
from ananta.shell import CommandFailed, run
from ananta.topologies import configs
from ananta.topologies.daemons import Daemon, daemons
from ananta.topologies.netns import NS_PREFIX, build_commands
from ananta.topologies.spec import LabPlan, LabSpec, Node, build_plan

RUN_DIR = os.environ.get("ANANTA_LAB_DIR", "/run/ananta/lab")
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPEC = os.path.join(PACKAGE_DIR, "default.yaml")
DEMO_SERVICES = os.path.join(PACKAGE_DIR, "demo-services.yaml")
STATE_FILE = "lab.json"


class LabError(RuntimeError):
    pass


def lab_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)]


def is_up() -> bool:
    return os.path.exists(os.path.join(RUN_DIR, STATE_FILE)) and bool(lab_namespaces())


def load_plan(with_services: bool = True) -> tuple[LabPlan, Services]:
    """The running lab's plan, and the VIPs its Manager cluster holds now.

    With `with_services=False` the cluster is not asked (it may be down), and the services
    returned are empty.
    """
    path = os.path.join(RUN_DIR, STATE_FILE)
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    plan = build_plan(LabSpec.model_validate(state["spec"]))
    return plan, cluster_services(plan) if with_services else Services()


def api(plan: LabPlan, *args: str, token_file: str | None = None,
        timeout: float = 30) -> str:
    """Run `ananta <args>` against the lab's Manager API, from inside the management network.

    Tries each replica in turn, so the lab can be asked even while one replica is down.
    """
    # the token travels in the environment, never on a command line (`ps` shows those)
    env = {**os.environ,
           "ANANTA_TOKEN": _read_secret(token_file or configs.secret_path(RUN_DIR, "admin.token"))}
    errors = []
    for manager in plan.by_role("manager"):
        try:
            return run(["ip", "netns", "exec", manager.namespace, sys.executable, "-m",
                        "ananta.cli", *args, "--url", configs.api_url(manager)],
                       env=env, timeout=timeout)
        except CommandFailed as exc:
            errors.append(exc)
            if "cannot reach the Manager API" not in exc.output:
                raise
    raise LabError(f"no Manager replica answers: {errors[-1] if errors else 'none'}")


def cluster_services(plan: LabPlan) -> Services:
    return Services.model_validate({"vips": json.loads(api(plan, "vip", "list", "--json"))})


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().strip()


def ns_run(plan: LabPlan, node: str, argv: list[str], env: dict[str, str] | None = None,
           check: bool = True, timeout: float = 30) -> str:
    if node not in plan.nodes:
        raise LabError(f"no node {node!r} in the lab")
    prefix = ["ip", "netns", "exec", plan.nodes[node].namespace]
    if env:
        prefix += ["env", *[f"{k}={v}" for k, v in env.items()]]
    return run(prefix + argv, check=check, timeout=timeout)


def ovs_cmd_env(node: str) -> dict[str, str]:
    return {"OVS_RUNDIR": configs.node_dir(RUN_DIR, node)}


# --- up ------------------------------------------------------------------------------------

def _write(path: str, text: str, owner: str | None = None, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # (an existing file keeps its mode through O_CREAT)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if owner:
        shutil.chown(path, owner, owner)


def write_secrets(plan: LabPlan) -> dict[str, str]:
    """A fresh Raft password, BGP (TCP MD5) password and bearer tokens for this lab,
    readable by root only."""
    secrets_dir = os.path.join(RUN_DIR, "secrets")
    os.makedirs(secrets_dir, mode=0o700, exist_ok=True)
    values = {}
    names = ["raft.password", "bgp-md5.password", "admin.token", "demo.token"]
    names += [f"agent-{hv.name}.token" for hv in plan.by_role("hypervisor")]
    for name in names:
        value = secrets.token_urlsafe(32)
        path = os.path.join(secrets_dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        values[name] = value
    return values


def write_configs(plan: LabPlan, secret: dict[str, str]) -> None:
    for node in plan.nodes.values():
        os.makedirs(configs.node_dir(RUN_DIR, node), exist_ok=True)

    def sha(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()

    admin_sha = sha(secret["admin.token"])
    agents = {hv.name: sha(secret[f"agent-{hv.name}.token"]) for hv in plan.by_role("hypervisor")}
    for manager in plan.by_role("manager"):
        _write(os.path.join(configs.node_dir(RUN_DIR, manager), "manager.yaml"), yaml.safe_dump(
            configs.manager_config(plan, manager, RUN_DIR, admin_sha, agents), sort_keys=False))
    _write(os.path.join(RUN_DIR, "cli.yaml"),
           yaml.safe_dump(configs.cli_config(plan, RUN_DIR), sort_keys=False))
    md5 = secret["bgp-md5.password"]
    for mux in plan.by_role("mux"):  # (mux.yaml and bgpd.conf hold the BGP password: 0600)
        _write(os.path.join(configs.node_dir(RUN_DIR, mux), "mux.yaml"),
               yaml.safe_dump(configs.mux_config(plan, mux, RUN_DIR, md5), sort_keys=False),
               mode=0o600)
    for hv in plan.by_role("hypervisor"):
        _write(os.path.join(configs.node_dir(RUN_DIR, hv), "hostagent.yaml"),
               yaml.safe_dump(configs.hostagent_config(plan, hv, RUN_DIR), sort_keys=False))
    for node in [*plan.by_role("router"), *plan.by_role("mux")]:
        d = configs.frr_dir(RUN_DIR, node)
        os.makedirs(d, exist_ok=True)
        shutil.chown(d, "frr", "frr")
        texts = {"zebra": configs.zebra_conf(node), "bgpd": configs.bgpd_conf(plan, node, md5)
                 if node.role == "router" else "", "bfdd": configs.bfdd_conf(plan, node)}
        for prog in configs.frr_daemons(plan, node):
            _write(os.path.join(d, f"{prog}.conf"), texts[prog], "frr", mode=0o600)


def start_daemon(plan: LabPlan, daemon: Daemon) -> None:
    env = dict(daemon.env)
    for setup in daemon.setup:
        ns_run(plan, daemon.node, list(setup), env=env)
    if daemon.detaches:
        ns_run(plan, daemon.node, list(daemon.argv), env=env)
        return
    log = open(daemon.log or os.devnull, "ab")  # noqa: SIM115
    ns = plan.nodes[daemon.node].namespace
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *daemon.argv],
                            env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _write(os.path.join(configs.node_dir(RUN_DIR, daemon.node), f"{daemon.name}.pid"),
           f"{proc.pid}\n")


def up(spec_path: str | None, services_path: str | None, timeout: float = 90,
       say: Callable[[str], None] = print) -> LabPlan:
    if is_up():
        raise LabError("a lab is already up (see `ananta lab status`; `ananta lab down` first)")
    spec = load_yaml_file(LabSpec, spec_path or DEFAULT_SPEC)
    plan = build_plan(spec)
    services_file = services_path or DEMO_SERVICES
    services = load_yaml_file(Services, services_file)
    errors = check_services(services, configs.inventory(plan))
    if errors:
        raise LabError("\n".join(f"{services_file}: {e}" for e in errors))
    if lab_namespaces():
        say("leftovers of an earlier lab found: cleaning them first")
        down(say=lambda _: None)
    os.makedirs(RUN_DIR, exist_ok=True)
    try:
        t0 = time.monotonic()
        for argv in build_commands(plan):
            run(argv)
        secret = write_secrets(plan)
        write_configs(plan, secret)
        _write(os.path.join(RUN_DIR, STATE_FILE),
               json.dumps({"spec": spec.model_dump(mode="json")}, indent=1))
        say(f"namespaces and links: {len(plan.nodes)} nodes, {len(plan.links)} links "
            f"({time.monotonic() - t0:.1f} s)")
        for daemon in daemons(plan, RUN_DIR, os.path.dirname(sys.executable), sys.executable):
            start_daemon(plan, daemon)
        say(f"daemons started ({time.monotonic() - t0:.1f} s); waiting for the Manager cluster")
        wait_cluster(plan, timeout)
        demo_token = configs.secret_path(RUN_DIR, "demo.token")
        api(plan, "tenant", "create", "demo", "--token-file", demo_token, "--no-wait")
        say(f"Manager cluster up ({time.monotonic() - t0:.1f} s); applying {services_file} "
            "as tenant demo through the API")
        api(plan, "apply", "-f", os.path.abspath(services_file), token_file=demo_token)
        wait_ready(plan, services, timeout)
        say(f"lab ready in {time.monotonic() - t0:.1f} s")
    except BaseException:
        say(f"lab did not come up; its logs are in {RUN_DIR}; `ananta lab down` removes it")
        raise
    return plan


def wait_cluster(plan: LabPlan, timeout: float) -> None:
    """Until a replica reports a leader with a quorum and the inventory seeded."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            st = json.loads(api(plan, "cluster", "--json", timeout=10))
            if st["leader"] and st["has_quorum"] and st["generation"] >= 1:
                return
            last = f"leader={st['leader']} quorum={st['has_quorum']} gen={st['generation']}"
        except (LabError, CommandFailed, subprocess.TimeoutExpired, ValueError) as exc:
            last = str(exc).splitlines()[-1] if str(exc) else repr(exc)
        time.sleep(0.5)
    raise LabError(f"the Manager cluster did not form in {timeout:.0f} s ({last})\n{log_tails()}")


def apply_services(text: str, source: str, timeout: float = 30) -> Services:
    """`ananta apply` a services document as tenant demo; wait until the lab serves it."""
    plan, _ = load_plan()
    services = parse_yaml_text(Services, text, source)
    path = os.path.join(RUN_DIR, "apply.yaml")
    _write(path, text)
    api(plan, "apply", "-f", path, "--prune",
        token_file=configs.secret_path(RUN_DIR, "demo.token"))
    wait_ready(plan, services, timeout)
    return services


# --- readiness -----------------------------------------------------------------------------

@dataclass
class Readiness:
    ready: bool
    problems: list[str] = field(default_factory=list)


def bgp_problems(plan: LabPlan) -> list[str]:
    problems = []
    for r in plan.by_role("router"):
        d = configs.node_dir(RUN_DIR, r)
        try:
            out = ns_run(plan, r.name, ["vtysh", "--vty_socket", d, "-c",
                                        "show bgp ipv4 unicast summary json"], timeout=10)
            peers = json.loads(out or "{}").get("peers", {})
        except (CommandFailed, ValueError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{r.name}: bgpd not answering ({exc})")
            continue
        expected = [p for p in plan.neighbors(r.name) if p[0].role in ("router", "mux")]
        settle_ms = 1000 * plan.spec.bgp_hold_time
        for peer, address, _ in expected:
            info = peers.get(address, {})
            state = info.get("state", "absent")
            if state != "Established":
                problems.append(f"{r.name}: BGP to {peer.name} ({address}) is {state}")
            elif info.get("peerUptimeMsec", 0) < settle_ms:  # has not yet outlived a hold time
                problems.append(f"{r.name}: BGP to {peer.name} up for only "
                                f"{info.get('peerUptimeMsec', 0)} ms")
        if "bfdd" in configs.frr_daemons(plan, r):
            problems += bfd_problems(plan, r, d)
    return problems


def bfd_problems(plan: LabPlan, router: Node, vty_dir: str) -> list[str]:
    """Every Mux under this router has its BFD session up."""
    try:
        out = ns_run(plan, router.name, ["vtysh", "--vty_socket", vty_dir, "-c",
                                         "show bfd peers json"], timeout=10)
        peers = {p.get("peer"): p.get("status") for p in json.loads(out or "[]")}
    except (CommandFailed, ValueError, subprocess.TimeoutExpired) as exc:
        return [f"{router.name}: bfdd not answering ({exc})"]
    return [f"{router.name}: BFD to {peer.name} ({address}) is {peers.get(address, 'absent')}"
            for peer, address, _ in plan.neighbors(router.name)
            if peer.role == "mux" and peers.get(address) != "up"]


def route_problems(plan: LabPlan, services: Services) -> list[str]:
    problems = []
    mux_leaves = {m.leaf for m in plan.by_role("mux")}
    for r in plan.by_role("router"):
        for vip in services.vips:
            out = ns_run(plan, r.name, ["ip", "-j", "route", "show", f"{vip.address}/32"],
                         check=False)
            routes = json.loads(out or "[]")
            if not routes:
                problems.append(f"{r.name}: no route to VIP {vip.address}")
                continue
            hops = len(routes[0].get("nexthops", [])) or 1
            if r.name.startswith("spine") and hops < len(mux_leaves):
                problems.append(f"{r.name}: VIP {vip.address} has {hops} paths, "
                                f"want {len(mux_leaves)} (one per leaf with a Mux)")
    return problems


def switch_state(plan: LabPlan, node: str, bridge: str) -> tuple[set[int], GroupSummary] | None:
    """(our flow cookies, groups) on one bridge, or None when it cannot be asked yet."""
    # --no-names: with port names, every ovs-ofctl call costs ovs-vswitchd ~10 ms (port
    # descriptions), 25x the dump itself
    ofctl = ["ovs-ofctl", "--no-names", "-O", "OpenFlow15"]
    try:
        flows = ns_run(plan, node, [*ofctl, "dump-flows", bridge], env=ovs_cmd_env(node),
                       timeout=10)
        groups = ns_run(plan, node, [*ofctl, "dump-groups", bridge], env=ovs_cmd_env(node),
                        timeout=10)
    except (CommandFailed, subprocess.TimeoutExpired):
        return None
    return {c for c in cookies_in_flow_dump(flows) if is_ours(c)}, groups_in_dump(groups)


def dip_in_every_mux(plan: LabPlan, dip: str) -> bool | None:
    """Does every Mux send new connections to `dip` (a bucket, or a split-bin flow, setting
    its tun_id)? None: a Mux cannot be asked, or the Muxes disagree."""
    tun_id = f"set_field:{hex(int(ipaddress.IPv4Address(dip)))}->tun_id"
    seen = set()
    for mux in (n.name for n in plan.by_role("mux")):
        try:
            text = "".join(ns_run(plan, mux, ["ovs-ofctl", "--no-names", "-O", "OpenFlow15",
                                              what, "br-int", *rest], env=ovs_cmd_env(mux),
                                  timeout=10)
                           for what, *rest in (["dump-groups"], ["dump-flows", "table=4"]))
        except (CommandFailed, subprocess.TimeoutExpired):
            return None
        seen.add(tun_id in text)
    return seen.pop() if len(seen) == 1 else None


def cluster_down(plan: LabPlan) -> frozenset[str]:
    """The backends (ADDRESS:PORT) the cluster has as down: its switches leave them out."""
    return frozenset(json.loads(api(plan, "health", "--json")))


def cluster_tables(plan: LabPlan, services: Services) -> dict[str, SlotTable]:
    """Each endpoint's slot table, as the cluster has it."""
    return endpoint_tables(services, lambda *args: api(plan, *args))


def endpoint_tables(services: Services, cli: Callable[..., str]) -> dict[str, SlotTable]:
    """Each endpoint's slot table, read with `ananta vip slots` (`cli` runs the CLI with
    the arguments given and returns its output)."""
    tables = {}
    for vip in services.vips:
        for ep in vip.endpoints:
            data = json.loads(cli("vip", "slots", vip.name, f"{ep.protocol}:{ep.port}",
                                  "--tenant", vip.tenant, "--json"))
            if data["whole"]:
                tables[endpoint_key(vip.address, ep.protocol, ep.port)] = decode_table(data)
    return tables


def cluster_snat(plan: LabPlan) -> dict[str, tuple[SnatBlock, ...]]:
    """Each DIP's SNAT port blocks, as the cluster has them."""
    return blocks_by_dip(json.loads(api(plan, "snat", "--json")))


def switch_problems(plan: LabPlan, services: Services) -> list[str]:
    """Every switch holds exactly its desired flows (by cookie) and groups (buckets, weights)."""
    inv = configs.inventory(plan)
    programs = desired_programs(services, inv, cluster_down(plan), cluster_snat(plan),
                               cluster_tables(plan, services))
    problems = []
    for dpid, target in switch_targets(inv).items():
        state = switch_state(plan, target.node, f"br-{target.bridge}")
        if state is None:
            problems.append(f"{target.label}: not reachable yet")
            continue
        ours, groups = state
        want = programs[dpid].cookies
        if ours != want:
            problems.append(f"{target.label}: {len(want - ours)} flows missing, "
                            f"{len(ours - want)} stale")
        if groups != group_summary(programs[dpid]):
            problems.append(f"{target.label}: groups differ from the desired ones")
    return problems


def readiness(plan: LabPlan, services: Services) -> Readiness:
    problems = switch_problems(plan, services) + bgp_problems(plan)
    if not problems:
        problems = route_problems(plan, services)
    return Readiness(not problems, problems)


def log_tails(lines: int = 15) -> str:
    out = []
    for root, _, files in sorted(os.walk(RUN_DIR)):
        for f in sorted(files):
            if f.endswith(".log"):
                path = os.path.join(root, f)
                with open(path, errors="replace") as fh:
                    tail = fh.readlines()[-lines:]
                if tail:
                    out.append(f"--- {path}\n" + "".join(tail))
    return "\n".join(out)


def wait_ready(plan: LabPlan, services: Services, timeout: float) -> None:
    """Until the lab is ready twice in a row, a second apart (settled, not passing through)."""
    deadline = time.monotonic() + timeout
    state = Readiness(False, ["not checked"])
    streak = 0
    while time.monotonic() < deadline:
        state = readiness(plan, services)
        streak = streak + 1 if state.ready else 0
        if streak == 2:
            return
        time.sleep(1)
    problems = "\n  ".join(state.problems)
    raise LabError(f"lab not ready after {timeout:.0f} s:\n  {problems}\n{log_tails()}")


# --- status / exec / down ------------------------------------------------------------------

def status() -> dict[str, Any]:
    if not is_up():
        return {"up": False, "ready": False, "nodes": [], "problems": ["no lab is up"]}
    try:
        plan, services = load_plan()
        state = readiness(plan, services)
    except (LabError, CommandFailed) as exc:
        plan, services = build_plan(_saved_spec()), Services()
        state = Readiness(False, [f"Manager API: {exc}"])
    return {
        "up": True,
        "ready": state.ready,
        "problems": state.problems,
        "run_dir": RUN_DIR,
        "vips": [v.address for v in services.vips],
        "nodes": [{"name": n.name, "role": n.role, "namespace": n.namespace,
                   "addresses": n.addresses} for n in plan.nodes.values()],
    }


def _saved_spec() -> LabSpec:
    with open(os.path.join(RUN_DIR, STATE_FILE), encoding="utf-8") as fh:
        return LabSpec.model_validate(json.load(fh)["spec"])


def exec_argv(node: str, argv: list[str]) -> list[str]:
    plan = build_plan(_saved_spec())
    if node not in plan.nodes:
        raise LabError(f"no node {node!r}; nodes: {', '.join(plan.nodes)}")
    env = ovs_cmd_env(node) if plan.nodes[node].role in ("mux", "hypervisor") else {}
    return ["ip", "netns", "exec", plan.nodes[node].namespace, "env",
            *[f"{k}={v}" for k, v in env.items()], *argv]


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def down(say: Callable[[str], None] = print) -> bool:
    """Remove every lab namespace (and so its veths), process and run dir. False if none."""
    namespaces = lab_namespaces()
    found = bool(namespaces) or os.path.exists(RUN_DIR)
    pids: list[int] = []
    for ns in namespaces:
        out = run(["ip", "netns", "pids", ns], check=False)
        pids += [int(p) for p in out.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _alive(pids):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for ns in namespaces:
        run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    if found:
        say(f"lab down: {len(namespaces)} namespaces and {len(pids)} processes removed")
    return found
