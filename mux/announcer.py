"""ExaBGP's helper on a Mux: announce exactly the VIPs this Mux's OVS is programmed for.

Every poll it reads the VIP steering flows from br-phy (what the Manager programmed); when
OVS has none, or cannot be asked three polls in a row, the VIPs are withdrawn. Commands go
to stdout, one per line, flushed;
ExaBGP's answers (`done`/`error`) are read from stdin on a thread, so ExaBGP never blocks.
ExaBGP respawns this process if it dies; a new one starts from nothing and announces in full.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time

from ananta.agent import ovs_env
from ananta.bgp.commands import route_changes
from ananta.bridges import BR_PHY
from ananta.mux.config import MuxConfig, load_mux_config
from ananta.mux.programmed import steer_cookie_filter, vips_in_flow_dump
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.mux.announcer")


FAILED_POLLS_BEFORE_WITHDRAW = 3  # one slow or failed read is not an outage


def programmed_vips(config: MuxConfig) -> set[str] | None:
    """The VIPs br-phy steers, or None when OVS could not be asked."""
    try:
        out = run(["ovs-ofctl", "-O", "OpenFlow15", "dump-flows", BR_PHY, steer_cookie_filter()],
                  env=ovs_env(config), timeout=5)
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning("cannot read br-phy flows: %s", exc)
        return None
    return vips_in_flow_dump(out)


def read_answers() -> None:
    for line in sys.stdin:
        answer = line.strip()
        if answer == "error":
            LOG.error("ExaBGP refused a command")
        elif answer and answer != "done":
            LOG.info("ExaBGP: %s", answer)
    LOG.info("ExaBGP closed our stdin; exiting")
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ananta-mux-announcer")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_mux_config(args.config)
    threading.Thread(target=read_answers, daemon=True).start()
    announced: set[str] = set()
    failures = 0
    while True:
        read = programmed_vips(config)
        failures = 0 if read is not None else failures + 1
        if read is None and failures < FAILED_POLLS_BEFORE_WITHDRAW:
            time.sleep(config.poll_interval)
            continue
        wanted = read or set()  # OVS down for good: withdraw everything
        for command in route_changes(announced, wanted):
            LOG.info("%s", command)
            sys.stdout.write(command + "\n")
            sys.stdout.flush()
        announced = wanted
        time.sleep(config.poll_interval)


if __name__ == "__main__":
    sys.exit(main())
