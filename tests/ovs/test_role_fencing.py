"""A deposed leader cannot change a switch: OpenFlow roles with generation_id = Raft term.

The Manager's leader claims MASTER with its Raft term as generation_id; when a new leader
(higher term) claims MASTER, the switch demotes the old one to SLAVE and refuses its writes,
and a stale term cannot take MASTER back. Shown on a real OVS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

import pytest

NS = "at-fence"
PORT = 16633
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def switch() -> Iterator[Callable[..., str]]:
    d = tempfile.mkdtemp(prefix="ananta-fence-")
    env = {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}

    def sh(*argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", NS, *argv], env=env, check=True,
                              capture_output=True, text=True, timeout=30).stdout

    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    pids = []
    try:
        sh("ip", "link", "set", "lo", "up")
        sh("ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        sh("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
           f"--pidfile={d}/ovsdb-server.pid", "--detach", "--no-chdir",
           f"--log-file={d}/ovsdb-server.log")
        sh("ovs-vsctl", "--no-wait", "init")
        sh("ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid", "--detach",
           "--no-chdir", f"--log-file={d}/ovs-vswitchd.log")
        for name in ("ovsdb-server", "ovs-vswitchd"):
            with open(f"{d}/{name}.pid") as fh:
                pids.append(int(fh.read()))
        sh("ovs-vsctl", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
           "fail_mode=secure", "protocols=OpenFlow15", "--", "set-controller", "br0",
           f"ptcp:{PORT}:127.0.0.1")
        yield sh
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_a_deposed_leader_cannot_change_the_switch(switch: Callable[..., str]) -> None:
    out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m",
                          "tests.ovs.fence_client", str(PORT)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {
        "old_claims_master_term4": "master",
        "old_writes_as_master": "ok",
        "new_claims_master_term5": "master",
        "old_writes_after_new_leader": "error:is_slave",
        "old_reclaims_master_term4": "error:stale",
        "new_writes": "ok",
    }
    flows = switch("ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br0")
    assert "priority=7" in flows and "priority=9" in flows
    assert "priority=8" not in flows
