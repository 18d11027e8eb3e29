"""The default Clos lab with the real daemons: the VIP is served end to end with DSR."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import yaml

from ananta.topologies import configs, lab
from ananta.topologies.checks import serve_check

VIP = "203.0.113.10"
ANANTA = [os.path.join(os.path.dirname(sys.executable), "ananta")]


def cli(*args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ANANTA, *args], capture_output=True, text=True, timeout=timeout)


def lab_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", r"ananta-(manager|mux|hostagent)|exabgp|"
                          r"/usr/lib/frr/(bgpd|zebra)|ananta/lab/"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def diagnostics(plan: lab.LabPlan) -> str:
    """Routes, BGP and the Muxes' speaker logs: what a failed traffic check needs."""
    out = []
    for r in ("border", "spine1", "spine2", "leaf1", "leaf2"):
        out.append(f"--- {r} routes to the VIP")
        out.append(lab.ns_run(plan, r, ["ip", "route", "show", VIP], check=False))
    for path in sorted(glob.glob(f"{lab.RUN_DIR}/*/exabgp.log") +
                       glob.glob(f"{lab.RUN_DIR}/leaf*/bgpd.log") +
                       glob.glob(f"{lab.RUN_DIR}/mux*/ananta-mux.log")):
        with open(path, errors="replace") as fh:
            out.append(f"--- {path}\n" + "".join(fh.readlines()[-25:]))
    return "\n".join(out)


def test_vip_served_by_all_backends_through_both_muxes_with_dsr(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    report = serve_check(VIP, count=200)
    assert report.failures == []
    assert set(report.served_by) == {"vm1", "vm2", "vm3", "vm4"}, report.served_by
    assert min(report.served_by.values()) >= 20, report.served_by
    if sorted(report.muxes_carrying) != ["mux1", "mux2"]:
        print(diagnostics(plan))
    assert sorted(report.muxes_carrying) == ["mux1", "mux2"], report.mux_endpoint_packets
    assert report.dsr_ok(plan), report.vip_packets_leaving


METRICS_SCRIPT = """
import os, httpx
for url in os.environ["URLS"].split():
    r = httpx.get(url + "/metrics", headers={"Authorization": "Bearer " + os.environ["T"]})
    print(r.text)
"""


def leader_metrics(plan: lab.LabPlan) -> dict[str, float]:
    """Every replica's /metrics samples, summed by name and labels (the Muxes' counters are
    on the leader alone)."""
    managers = plan.by_role("manager")
    with open(configs.secret_path(lab.RUN_DIR, "admin.token")) as fh:
        env = {**os.environ, "T": fh.read().strip(),
               "URLS": " ".join(configs.api_url(m) for m in managers)}
    out = subprocess.run(["ip", "netns", "exec", managers[0].namespace, sys.executable, "-c",
                          METRICS_SCRIPT], capture_output=True, text=True, env=env, timeout=30,
                         check=True).stdout
    samples: dict[str, float] = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def test_metrics_count_each_endpoints_new_connections_on_every_mux(running_lab: None) -> None:
    """/metrics has, per Mux, the endpoint's packets, bytes and new connections, and the
    VIP's packets and no-endpoint drops (each kind of counted flow: one answer used to
    replace the others)."""
    plan, _ = lab.load_plan()

    def new_connections() -> float:
        return sum(v for k, v in leader_metrics(plan).items()
                   if k.startswith(f'ananta_endpoint_new_connections_total{{endpoint="{VIP}:'))

    before = new_connections()
    report = serve_check(VIP, count=50)
    assert report.failures == []
    deadline = time.monotonic() + 10  # the leader reads the counters every second
    while new_connections() < before + 50:
        assert time.monotonic() < deadline, (before, leader_metrics(plan))
        time.sleep(0.5)
    names = {k.split("{")[0] for k in leader_metrics(plan)}
    for kind in ("endpoint_packets", "endpoint_bytes", "vip_packets", "vip_bytes",
                 "vip_dropped_packets", "mux_fragments_packets"):
        assert f"ananta_{kind}_total" in names, sorted(names)


def test_routers_hold_an_ecmp_route_over_both_muxes(running_lab: None) -> None:
    plan, _ = lab.load_plan()
    for spine in ("spine1", "spine2"):
        routes = json.loads(lab.ns_run(plan, spine, ["ip", "-j", "route", "show", VIP]))
        assert len(routes[0]["nexthops"]) == 2, routes
    routes = json.loads(lab.ns_run(plan, "border", ["ip", "-j", "route", "show", VIP]))
    assert len(routes[0]["nexthops"]) == 2, routes


def test_mux_bgp_sessions_are_tcp_md5_signed(running_lab: None) -> None:
    """The leaves' sessions to the Muxes are up with a TCP MD5 key (lab readiness checks
    they are up), and a leaf answers no unsigned connection from a Mux's address."""
    plan, _ = lab.load_plan()
    with open(os.path.join(lab.RUN_DIR, "leaf1", "bgpd.conf")) as fh:
        assert " password " in fh.read()
    assert oct(os.stat(os.path.join(lab.RUN_DIR, "mux1", "mux.yaml")).st_mode & 0o777) == "0o600"
    leaf = plan.nodes["mux1"].leaf or ""
    probe = ("import socket, sys\n"
             "try:\n"
             f"    socket.create_connection(('{plan.nodes[leaf].address_of('mux1')}', 179),"
             " timeout=2).close()\n"
             "    print('answered')\n"
             "except OSError as exc:\n"
             "    print(type(exc).__name__)\n")
    out = lab.ns_run(plan, "mux1", [sys.executable, "-c", probe], timeout=10).strip()
    assert out in ("TimeoutError", "timeout"), out  # unsigned SYNs are dropped by the leaf


def test_status_exec_and_a_second_up(running_lab: None) -> None:
    status = cli("lab", "status", "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["ready"] is True
    roles = {n["name"]: n["role"] for n in state["nodes"]}
    assert roles["mux1"] == "mux" and roles["vm4"] == "vm" and roles["manager3"] == "manager"
    assert roles["leaf1"] == "router" and roles["client1"] == "client"
    assert roles["hv2"] == "hypervisor"
    addr = cli("lab", "exec", "vm1", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "10.1.0.11/24" in addr.stdout
    again = cli("lab", "up")
    assert again.returncode == 0 and "already up" in again.stdout


def test_a_backend_removed_from_the_services_is_no_longer_served(running_lab: None) -> None:
    with open(lab.DEMO_SERVICES) as fh:
        data = yaml.safe_load(fh)
    original = yaml.safe_dump(data)
    data["vips"][0]["endpoints"][0]["backends"] = data["vips"][0]["endpoints"][0]["backends"][:3]
    lab.apply_services(yaml.safe_dump(data), "three-backends")
    try:
        report = serve_check(VIP, count=60)
        assert report.failures == []
        assert set(report.served_by) == {"vm1", "vm2", "vm3"}
    finally:
        lab.apply_services(original, "demo")


def test_down_leaves_nothing_behind(running_lab: None) -> None:
    assert lab.down(say=print) is True
    assert lab.lab_namespaces() == []
    assert not os.path.exists(lab.RUN_DIR)
    assert lab_processes() == []
    again = cli("lab", "down")
    assert again.returncode == 0 and "no lab is up" in again.stdout


def test_lab_up_refuses_bad_services_before_building_anything(tmp_path: object) -> None:
    bad = os.path.join(str(tmp_path), "bad.yaml")
    with open(bad, "w") as fh:
        fh.write("vips:\n  - name: web\n    address: 203.0.113.10\n    endpoints:\n"
                 "      - {protocol: tcp, port: 80, backends: [{address: 10.1.0.11, port: 8080,"
                 " weight: 7000}]}\n")
    result = cli("lab", "up", "--services", bad)
    assert result.returncode != 0
    assert "vips[0].endpoints[0].backends[0].weight" in result.stderr
    assert lab.lab_namespaces() == []
