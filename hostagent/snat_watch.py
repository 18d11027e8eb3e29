"""The host agent's SNAT watcher (imperative shell): every 0.25 s it counts the SNAT
connections of its DIPs in OVS's conntrack table, and asks the Manager for a block more, or
gives an idle one back, as snat_usage.decide says. The blocks themselves are re-read from the
Manager every 2 s, and at once after a change."""

from __future__ import annotations

import logging
import subprocess
import threading
import time

from ananta.controller.snat import blocks_by_dip
from ananta.hostagent.manager_api import ApiError, ManagerApi
from ananta.hostagent.snat_usage import Release, Request, decide, snat_ports_in_use
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.hostagent.snat")
TICK, BLOCKS_EVERY, BACKOFF = 0.25, 2.0, 5.0


class SnatWatch:
    def __init__(self, host: str, api: ManagerApi, ovs_env: dict[str, str]):
        self.host, self.api, self.env = host, api, ovs_env
        self.idle_since: dict[tuple[str, int], float] = {}
        self.refused_until: dict[str, float] = {}

    def start(self) -> None:
        threading.Thread(target=self.run, name="snat-watch", daemon=True).start()

    def run(self) -> None:
        blocks, next_read = {}, 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_read:
                    blocks = blocks_by_dip(self.api.call("GET", f"/api/v1/hosts/{self.host}/snat"))
                    next_read = now + BLOCKS_EVERY
                dump = run(["ovs-appctl", "dpctl/dump-conntrack"], env=self.env, timeout=5)
                in_use = snat_ports_in_use(dump, set(blocks))
                held = {d for d, t in self.refused_until.items() if t > now}
                for action in decide(blocks, in_use, self.idle_since, held, now):
                    self.act(action, len(in_use.get(action.dip, [])))
                    next_read = 0.0
            except (ApiError, CommandFailed, OSError, subprocess.TimeoutExpired) as exc:
                LOG.warning("SNAT watch: %s", exc)
                time.sleep(1.0)
            time.sleep(TICK)

    def act(self, action: Request | Release, used: int) -> None:
        try:
            if isinstance(action, Request):
                self.api.call("POST", f"/api/v1/hosts/{self.host}/snat-requests",
                              {"dip": action.dip})
                LOG.info("%s holds %d SNAT ports: got one more block", action.dip, used)
            else:
                self.api.call("POST", f"/api/v1/hosts/{self.host}/snat-releases",
                              {"dip": action.dip, "start": action.start})
                LOG.info("%s: gave back idle SNAT block %d", action.dip, action.start)
        except ApiError as exc:
            if exc.status in (409, 429):  # no room, or at its cap: ask again later
                self.refused_until[action.dip] = time.monotonic() + BACKOFF
                LOG.warning("%s: %s", action.dip, exc)
            else:
                raise
