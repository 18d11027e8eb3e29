"""Real `ananta-manager` processes on loopback, for the cluster tier.

Each replica listens on 127.0.0.1 (Raft, REST API and OpenFlow on ports of its own) in the
test's own process tree; no switch connects, the Raft cluster and the API are what is tested.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import yaml

from tests.unit.fixtures import default_inventory

BIN = os.path.dirname(sys.executable)
ADMIN_TOKEN = "cluster-admin-token-0123456789"
BASE = 17100


class Managers:
    def __init__(self, count: int = 3, base: int = BASE):
        self.count = count
        self.dir = tempfile.mkdtemp(prefix="ananta-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.base = base
        with open(f"{self.dir}/raft.password", "w") as fh:
            fh.write("cluster-raft-password-0123456789\n")
        replicas = [{"name": f"m{i}", "raft": f"127.0.0.1:{base + i}",
                     "api": f"127.0.0.1:{base + 100 + i}"} for i in range(1, count + 1)]
        for i in range(1, count + 1):
            config = {
                "self": f"m{i}", "replicas": replicas,
                "raft_password_file": f"{self.dir}/raft.password",
                "admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                "data_dir": f"{self.dir}/m{i}",
                "openflow": {"listen_address": "127.0.0.1", "port": base + 200 + i},
                "inventory": default_inventory().model_dump(mode="json"),
            }
            with open(f"{self.dir}/m{i}.yaml", "w") as fh:
                yaml.safe_dump(config, fh)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base + 100 + i}"

    def start(self, i: int) -> None:
        log = open(f"{self.dir}/m{i}.log", "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen([f"{BIN}/ananta-manager", "--config",
                                          f"{self.dir}/m{i}.yaml"], stdout=log,
                                         stderr=subprocess.STDOUT)

    def start_all(self) -> None:
        for i in range(1, self.count + 1):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        for i in list(self.procs):
            self.kill(i)
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, i: int, method: str, path: str, body: Any = None,
             timeout: float = 10.0) -> httpx.Response:
        return httpx.request(method, self.url(i) + path, json=body, timeout=timeout,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            r = self.call(i, "GET", "/api/v1/cluster", timeout=1.0)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait(self, predicate: Any, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def leader(self) -> int | None:
        for i in self.procs:
            st = self.status(i)
            if st and st["state"] == "leader" and st["has_quorum"]:
                return i
        return None

    def logs(self) -> str:
        out = []
        for i in range(1, self.count + 1):
            path = f"{self.dir}/m{i}.log"
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    out.append(f"--- m{i}\n" + "".join(fh.readlines()[-15:]))
        return "\n".join(out)
