"""A node whose uplink is read through AF_XDP, on a real ovs-vswitchd: the agents' own
bootstrap (`bridge_specs` + `vswitchd_options`, applied over OVSDB) makes the uplink an
afxdp interface polled by a PMD thread on the CPU asked for, and packets cross it.

Everything is named `at-xdp*` and removed at the end (processes by PID, then namespaces)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

import pytest

from ananta.config import parse
from ananta.node import NodeConfig, bridge_specs, host_network_commands, vswitchd_options
from ananta.ovsdb import NodeOvsdb
from tests.ovs.rig import sh

NS, PEER_NS = "at-xdp", "at-xdp-peer"
NODE = {"name": "mux9", "datapath_ids": {"int": "00b0000000000901", "phy": "00b0000000000902"},
        "uplink": {"interface": "uplink", "address": "198.18.251.1/30",
                   "gateway": "198.18.251.2", "driver": "af_xdp", "xdp_mode": "generic"},
        "managers": ["127.0.0.1:6653"], "pmd": {"cpu_mask": "0x2", "max_sleep_us": 100}}


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[str, NodeConfig]]:
    d = tempfile.mkdtemp(prefix="ananta-xdp-")
    env = {"OVS_RUNDIR": d}
    pids: list[int] = []
    for ns in (NS, PEER_NS):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", "uplink", "netns", NS, "type", "veth", "peer", "name", "peer0",
           "netns", PEER_NS)
        sh("ip", "-n", PEER_NS, "addr", "add", "198.18.251.2/30", "dev", "peer0")
        sh("ip", "-n", PEER_NS, "link", "set", "peer0", "up")
        sh("ip", "netns", "exec", NS, "ovsdb-tool", "create", f"{d}/conf.db",
           "/usr/share/openvswitch/vswitch.ovsschema")
        sh("ip", "netns", "exec", NS, "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
           f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log", "--detach",
           "--no-chdir", env=env)
        sh("ip", "netns", "exec", NS, "ovs-vsctl", "--no-wait", "init", env=env)
        sh("ip", "netns", "exec", NS, "ovs-vswitchd", f"unix:{d}/db.sock",
           f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log", "--detach",
           "--no-chdir", env=env)
        for name in ("ovsdb-server", "ovs-vswitchd"):
            with open(f"{d}/{name}.pid") as fh:
                pids.append(int(fh.read()))
        config = parse(NodeConfig, {**NODE, "ovs_rundir": d}, "mux9")
        NodeOvsdb(d).apply(bridge_specs(config), vswitchd_options(config))
        for argv in host_network_commands(config):
            sh("ip", "netns", "exec", NS, *argv, env=env)
        yield d, config
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in (NS, PEER_NS):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(d, ignore_errors=True)


def log_tail(d: str) -> str:
    with open(f"{d}/ovs-vswitchd.log") as fh:
        return fh.read()[-3000:]


def ovs(d: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", NS, *argv, env={"OVS_RUNDIR": d}).strip()


def test_the_uplink_is_an_afxdp_port_on_the_pmd_cpu_and_passes_packets(
        node: tuple[str, NodeConfig]) -> None:
    d, _ = node
    deadline = time.monotonic() + 15
    while ovs(d, "ovs-vsctl", "get", "interface", "uplink", "ofport") != "1":
        assert time.monotonic() < deadline, (
            ovs(d, "ovs-vsctl", "get", "interface", "uplink", "error") + log_tail(d))
        time.sleep(0.2)
    assert ovs(d, "ovs-vsctl", "get", "interface", "uplink", "type") == "afxdp"
    assert ovs(d, "ovs-vsctl", "get", "open_vswitch", ".",
               "other_config:pmd-cpu-mask") == '"0x2"'
    rxqs = ovs(d, "ovs-appctl", "dpif-netdev/pmd-rxq-show")
    assert "core_id 1" in rxqs and "uplink" in rxqs, rxqs
    # br-phy (no controller here, fail_mode secure) forwards with a NORMAL flow
    ovs(d, "ovs-ofctl", "add-flow", "br-phy", "actions=NORMAL")
    out = sh("ip", "netns", "exec", PEER_NS, "ping", "-c", "3", "-i", "0.2", "-W", "2",
             "198.18.251.1", check=False)
    assert " 0% packet loss" in out, out + ovs(d, "ovs-appctl", "dpctl/dump-flows")
