"""A two-node rig on real userspace OVS: one Mux and one hypervisor, each its own namespace
and its own ovsdb-server + ovs-vswitchd, joined by an underlay veth and a management veth,
bootstrapped by the real agents (`--once`) and programmed by the real `ananta-manager` (one
replica), whose VIPs are set with the real CLI (`ananta apply`) through its REST API.

Everything it makes is named `at-*` and removed by `stop()` (processes by PID, then the
namespaces, which take their veths with them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

from ananta.controller.desired import desired_programs, switch_targets
from ananta.controller.flows import is_ours
from ananta.controller.model import Inventory, Services, Vip, endpoint_key
from ananta.controller.slot_table import SlotTable
from ananta.controller.snat import blocks_by_dip
from ananta.ofctl_dump import (
    GroupSummary,
    cookies_in_flow_dump,
    group_summary,
    groups_in_dump,
)
from ananta.topologies.lab import endpoint_tables

BIN = os.path.dirname(sys.executable)
MUX_NS, HV_NS = "at-mux", "at-hv"
MGMT = {"at-mux": "198.19.255.1", "at-hv": "198.19.255.2"}
UNDERLAY = {"at-mux": "198.18.250.1", "at-hv": "198.18.250.2"}
DPIDS = {"at-mux": ("00b0000000000101", "00b0000000000102"),
         "at-hv": ("00b0000000000201", "00b0000000000202")}
VM_MACS = ("02:00:0a:09:00:0b", "02:00:0a:09:00:0c")
VM_IPS = ("10.9.0.11", "10.9.0.12")


def sh(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr}{proc.stdout}")
    return proc.stdout


ADMIN_TOKEN = "rig-admin-token-0123456789abcdef"
API = f"http://{MGMT[MUX_NS]}:8080"


def services(backend_ips: tuple[str, ...] = VM_IPS, vip: str = "203.0.113.10") -> dict[str, Any]:
    return {"vips": [{"name": "web", "address": vip, "endpoints": [{
        "protocol": "tcp", "port": 80,
        "backends": [{"address": ip, "port": 8080, "weight": 100} for ip in backend_ips]}]}]}


class Rig:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ananta-ovs-")
        self.pids: list[int] = []
        self.manager: subprocess.Popen[bytes] | None = None

    def node_dir(self, ns: str) -> str:
        return os.path.join(self.dir, ns)

    def ovs(self, ns: str, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", ns, *argv, check=check,
                  env={"OVS_RUNDIR": self.node_dir(ns)})

    @property
    def inventory(self) -> Inventory:
        return Inventory.model_validate({
            "vip_pool": ["203.0.113.0/24"],
            "muxes": [{"name": "mux", "underlay_address": UNDERLAY[MUX_NS],
                       "datapath_ids": {"int": DPIDS[MUX_NS][0], "phy": DPIDS[MUX_NS][1]}}],
            "hosts": [{"name": "hv", "underlay_address": UNDERLAY[HV_NS],
                       "datapath_ids": {"int": DPIDS[HV_NS][0], "phy": DPIDS[HV_NS][1]},
                       "vms": [{"name": f"vm{i + 1}", "address": VM_IPS[i], "mac": VM_MACS[i],
                                "ofport": 10 + i, "gateway": "10.9.0.1"} for i in range(2)]}],
        })

    def start(self) -> None:
        self.stop_namespaces()
        for ns in (MUX_NS, HV_NS):
            sh("ip", "netns", "add", ns)
            os.makedirs(self.node_dir(ns))
        sh("ip", "link", "add", "uplink", "netns", MUX_NS, "mtu", "1600", "type", "veth",
           "peer", "name", "uplink", "netns", HV_NS, "mtu", "1600")
        sh("ip", "link", "add", "mgmt0", "netns", MUX_NS, "type", "veth",
           "peer", "name", "mgmt0", "netns", HV_NS)
        for ns in (MUX_NS, HV_NS):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{MGMT[ns]}/24", "dev", "mgmt0")
            sh("ip", "-n", ns, "link", "set", "mgmt0", "up")
        for i in range(2):
            sh("ip", "link", "add", f"vm{i + 1}", "netns", HV_NS, "type", "veth",
               "peer", "name", f"vm{i + 1}-peer", "netns", HV_NS)
        for ns in (MUX_NS, HV_NS):
            d = self.node_dir(ns)
            self.ovs(ns, "ovsdb-tool", "create", f"{d}/conf.db",
                     "/usr/share/openvswitch/vswitch.ovsschema")
            self.ovs(ns, "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                     f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
                     "--detach", "--no-chdir")
            self.ovs(ns, "ovs-vsctl", "--no-wait", "init")
            self.ovs(ns, "ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid",
                     f"--log-file={d}/ovs-vswitchd.log", "--detach", "--no-chdir")
            for name in ("ovsdb-server", "ovs-vswitchd"):
                with open(f"{d}/{name}.pid") as fh:
                    self.pids.append(int(fh.read()))
        self.write_configs()
        self.start_manager()
        self.wait_api()
        result = self.write_services(services())
        assert result.returncode == 0, result.stderr
        self.ovs(MUX_NS, f"{BIN}/ananta-mux", "--once", "--config", f"{self.dir}/mux.yaml")
        self.ovs(HV_NS, f"{BIN}/ananta-hostagent", "--once", "--config", f"{self.dir}/hv.yaml")

    def write_configs(self) -> None:
        def node(ns: str, peer: str) -> dict[str, Any]:
            return {"name": ns.replace("at-", ""), "ovs_rundir": self.node_dir(ns),
                    "datapath_ids": {"int": DPIDS[ns][0], "phy": DPIDS[ns][1]},
                    "uplink": {"interface": "uplink", "address": f"{UNDERLAY[ns]}/30",
                               "gateway": UNDERLAY[peer]},
                    "managers": [f"{MGMT[MUX_NS]}:6653"]}

        mux = {**node(MUX_NS, HV_NS), "run_dir": self.node_dir(MUX_NS),
               "connection_limit_per_vip": 100,  # small, for the flood test
               "bgp": {"local_as": 65100, "peers": [{"address": "198.18.250.2",
                                                     "peer_as": 65011}]}}
        hv = {**node(HV_NS, MUX_NS), "vms": [
            {"name": f"vm{i + 1}", "interface": f"vm{i + 1}", "ofport": 10 + i}
            for i in range(2)]}
        with open(f"{self.dir}/raft.password", "w") as fh:
            fh.write("rig-raft-password-0123456789\n")
        manager = {"self": "m1",
                   "replicas": [{"name": "m1", "raft": f"{MGMT[MUX_NS]}:7001", "api":
                                 f"{MGMT[MUX_NS]}:8080"}],
                   "raft_password_file": f"{self.dir}/raft.password",
                   "admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                   "data_dir": f"{self.dir}/manager-data",
                   "openflow": {"listen_address": MGMT[MUX_NS], "port": 6653},
                   "inventory": self.inventory.model_dump(mode="json")}
        for name, data in (("mux", mux), ("hv", hv), ("manager", manager)):
            with open(f"{self.dir}/{name}.yaml", "w") as fh:
                yaml.safe_dump(data, fh)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", MUX_NS, sys.executable, "-m", "ananta.cli",
                               *args, "--url", API], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "ANANTA_TOKEN": ADMIN_TOKEN})
        if check and proc.returncode:
            raise AssertionError(f"ananta {' '.join(args)}: {proc.stderr}\n{self.logs()}")
        return proc

    def wait_api(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.cli("cluster", "--json", check=False)
            if proc.returncode == 0 and json.loads(proc.stdout)["generation"] >= 1:
                return
            time.sleep(0.2)
        raise AssertionError("the Manager did not come up\n" + self.logs())

    def write_services(self, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """`ananta apply --prune` the services (as the admin, for tenant `default`)."""
        path = f"{self.dir}/services.yaml"
        with open(path, "w") as fh:
            yaml.safe_dump(data, fh)
        return self.cli("apply", "-f", path, "--prune", "--no-wait", check=False)

    def start_manager(self) -> None:
        log = open(f"{self.dir}/manager.log", "ab")  # noqa: SIM115
        self.manager = subprocess.Popen(
            ["ip", "netns", "exec", MUX_NS, f"{BIN}/ananta-manager", "--config",
             f"{self.dir}/manager.yaml"], stdout=log, stderr=subprocess.STDOUT)

    def stop_manager(self) -> None:
        if self.manager and self.manager.poll() is None:
            self.manager.send_signal(signal.SIGTERM)
            try:
                self.manager.wait(5)
            except subprocess.TimeoutExpired:
                self.manager.kill()
                self.manager.wait(5)
        self.manager = None

    def services(self) -> Services:
        return Services.model_validate({"vips": json.loads(self.cli("vip", "list",
                                                                    "--json").stdout)})

    def tables(self, current: Services | None = None) -> dict[str, SlotTable]:
        """Each endpoint's slot table, as the Manager has it."""
        return endpoint_tables(current or self.services(), lambda *args: self.cli(*args).stdout)

    def table(self, vip: Vip) -> SlotTable | None:
        return self.tables(Services(vips=[vip])).get(
            endpoint_key(vip.address, vip.endpoints[0].protocol, vip.endpoints[0].port))

    def cookies(self, ns: str, bridge: str) -> set[int]:
        return cookies_in_flow_dump(
            self.ovs(ns, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", bridge))

    def groups(self, ns: str, bridge: str) -> GroupSummary:
        return groups_in_dump(self.ovs(ns, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", bridge))

    def programmed(self) -> bool:
        try:
            current = self.services()
        except AssertionError:  # the API is not answering (yet)
            return False
        snat = blocks_by_dip(json.loads(self.cli("snat", "--json").stdout))
        programs = desired_programs(current, self.inventory, snat=snat,
                                    tables=self.tables(current))
        for dpid, target in switch_targets(self.inventory).items():
            ns = MUX_NS if target.role == "mux" else HV_NS
            ours = {c for c in self.cookies(ns, f"br-{target.bridge}") if is_ours(c)}
            if ours != programs[dpid].cookies:
                return False
            if self.groups(ns, f"br-{target.bridge}") != group_summary(programs[dpid]):
                return False
        return True

    def wait_programmed(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.programmed():
                return
            time.sleep(0.2)
        raise AssertionError("switches not programmed in time\n" + self.logs())

    def manager_log(self) -> str:
        with open(f"{self.dir}/manager.log", errors="replace") as fh:
            return fh.read()

    def logs(self) -> str:
        out = []
        for path in (f"{self.dir}/manager.log", f"{self.node_dir(MUX_NS)}/ovs-vswitchd.log",
                     f"{self.node_dir(HV_NS)}/ovs-vswitchd.log"):
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    out.append(f"--- {path}\n" + "".join(fh.readlines()[-30:]))
        return "\n".join(out)

    def trace(self, ns: str, bridge: str, flow: str) -> str:
        return self.ovs(ns, "ovs-appctl", "ofproto/trace", bridge, flow)

    def stop_namespaces(self) -> None:
        for ns in (MUX_NS, HV_NS):
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)

    def stop(self) -> None:
        self.stop_manager()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in self.pids):
            time.sleep(0.1)
        for pid in self.pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.stop_namespaces()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
