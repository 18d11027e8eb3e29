"""ExaBGP's helper on a Mux: announce exactly the VIPs this Mux serves, while it may.

Every poll it reads br-phy's flows: the VIP steering flows the Manager programmed, and the
lease the Manager's leader renews while this Mux is in step with the config
(programmed.routes_wanted says what that means for BGP). When the lease is stale it also asks
OVS whether any Manager is connected as master: with none (the Manager cluster is down), the
Mux serves on with the flows it has rather than take the VIPs off the network.
Commands go to stdout, one per line, flushed; ExaBGP's answers (`done`/`error`) are read from
stdin on a thread, so ExaBGP never blocks.

ExaBGP respawns this process if it dies. What it announced is kept in RUN_DIR/announced: a
new helper withdraws what its predecessor announced that is no longer wanted, and announces
everything that is (announcing a route again is harmless; missing one is not).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time

from ananta.agent import ovs_env
from ananta.bgp.commands import announce, route_changes, withdraw
from ananta.bridges import BR_PHY
from ananta.controller.mux_watch import DRAIN_QUIET
from ananta.mux.config import MuxConfig, load_mux_config
from ananta.mux.programmed import PhyView, read_phy_dump, routes_wanted
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.mux.announcer")

FAILED_POLLS_BEFORE_WITHDRAW = 3  # one slow or failed read is not an outage


def read_phy(config: MuxConfig) -> PhyView | None:
    """What br-phy holds, or None when OVS could not be asked."""
    try:
        # A dead OVS refuses at once (withdrawn in 3 polls, < 1 s); a slow one, which still
        # forwards, gets 5 s per read: withdrawing from a busy Mux flaps routes for nothing.
        # --no-names: port names cost ovs-vswitchd ~10 ms a read (port descriptions), which
        # at 4 reads a second was 80% of an idle Mux's forwarding process.
        out = run(["ovs-ofctl", "--no-names", "-O", "OpenFlow15", "dump-flows", BR_PHY,
                   "table=0"], env=ovs_env(config), timeout=5)
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning("cannot read br-phy flows: %s", exc)
        return None
    return read_phy_dump(out)


def master_connected(config: MuxConfig) -> bool:
    """Whether a Manager holds the OpenFlow master role on this Mux now (True when OVS cannot
    say: then the lease decides, as before)."""
    try:
        out = run(["ovs-vsctl", "--timeout=2", "--format=json", "--columns=role,is_connected",
                   "list", "controller"], env=ovs_env(config), timeout=3)
        rows = json.loads(out)["data"]
    except (CommandFailed, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        LOG.warning("cannot read the controller connections: %s", exc)
        return True
    return any(role == "master" and connected is True for role, connected in rows)


def read_answers() -> None:
    for line in sys.stdin:
        answer = line.strip()
        if answer == "error":
            LOG.error("ExaBGP refused a command")
        elif answer and answer != "done":
            LOG.info("ExaBGP: %s", answer)
    LOG.info("ExaBGP closed our stdin; exiting")
    sys.exit(0)


def load_announced(path: str) -> dict[str, int]:
    """VIP -> AS-path prepend, as a previous helper left it."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def save_announced(path: str, announced: dict[str, int]) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(announced, fh, sort_keys=True)
    os.replace(path + ".tmp", path)


def send(commands: list[str]) -> None:
    for command in commands:
        LOG.info("%s", command)
        sys.stdout.write(command + "\n")
    sys.stdout.flush()


def withdraw_reason(view: PhyView | None, prepend: int, lease_timeout: float) -> str:
    if view is None:
        return "withdrawing every VIP: OVS cannot be read"
    if view.lease is None:
        return "withdrawing every VIP: no lease from the Manager's leader"
    if view.lease.draining:
        return ("draining: AS path prepended until routers stop sending" if prepend
                else "draining: routers stopped sending; withdrawing every VIP")
    if view.lease.age > lease_timeout:
        return f"withdrawing every VIP: the leader's lease is {view.lease.age:.1f} s old"
    return "no VIP is programmed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ananta-mux-announcer")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_mux_config(args.config)
    threading.Thread(target=read_answers, daemon=True).start()
    state_path = os.path.join(config.run_dir, "announced")
    announced = load_announced(state_path)  # what a previous helper may have left announced
    first = True
    failures = 0
    was_headless = False
    steer = (-1, time.monotonic())  # packets on the steering flows, and since when
    while True:
        view = read_phy(config)
        failures = 0 if view is not None else failures + 1
        now = time.monotonic()
        if view is not None and view.steer_packets != steer[0]:
            steer = (view.steer_packets, now)
        stale = (view is not None and view.lease is not None
                 and view.lease.age > config.lease_timeout)
        headless = stale and not master_connected(config)
        if headless != was_headless:
            LOG.warning("%s", "no Manager is master: serving on with the flows programmed "
                        "(headless)" if headless else "a Manager is master again")
            was_headless = headless
        wanted = routes_wanted(view, failures, FAILED_POLLS_BEFORE_WITHDRAW,
                               config.lease_timeout, quiet=now - steer[1] >= DRAIN_QUIET,
                               headless=headless)
        if wanted is not None:
            vips, prepend = wanted
            target = {v: prepend for v in vips}
            if first:  # a respawned helper: re-announce in full, withdraw what is stale
                commands = ([withdraw(v) for v in sorted(announced.keys() - target.keys())]
                            + [announce(v, prepend, config.bgp.local_as) for v in sorted(vips)])
                first = False
            else:
                commands = route_changes(announced, target, config.bgp.local_as)
            if commands:
                if not vips or prepend:
                    LOG.info("%s", withdraw_reason(view, prepend, config.lease_timeout))
                # the union first: a helper dying mid-way over-withdraws, never under
                save_announced(state_path, {**announced, **target})
                send(commands)
                announced = target
                save_announced(state_path, announced)
        time.sleep(config.poll_interval)


if __name__ == "__main__":
    sys.exit(main())
