"""`ananta-hostagent --config FILE`: bootstrap this hypervisor's OVS and keep it converged.

It makes br-phy (uplink, underlay address) and br-int (GRE, VM ports, patch ports) exist with
every Manager as controller, then checks every few seconds that they still do (an OVS restart
loses nothing the agent cannot put back; the Manager reprograms the flows on reconnect) and
ARPs the router (see refresh_router_mac).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from ananta.hostagent.config import HostAgentConfig, load_hostagent_config

from ananta.agent import bridges_present, converge, ovs_env
from ananta.config import InvalidConfig
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.hostagent")


def refresh_router_mac(config: HostAgentConfig) -> None:
    """ARP the router: its reply, seen on the uplink, (re)teaches br-phy the router's MAC.

    That learned flow sends Direct Server Return replies to the router; an OVS restart or a
    switch reprogramming loses it, so the agent re-teaches it at every check.
    """
    run(["arping", "-q", "-c", "1", "-w", "1", "-I", "br-phy", config.uplink.gateway],
        env=ovs_env(config), check=False, timeout=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ananta-hostagent", description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--check-config", action="store_true")
    ap.add_argument("--once", action="store_true", help="bootstrap, then exit")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_hostagent_config(args.config)
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("config OK")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    converged = False
    while True:
        try:
            if not converged or not bridges_present(config):
                converge(config, config.vms)
                converged = True
                LOG.info("%s: bridges converged (%d VM ports)", config.name, len(config.vms))
        except CommandFailed as exc:
            converged = False
            LOG.error("bootstrap failed, retrying: %s", exc)
        if converged:
            refresh_router_mac(config)
        if args.once and converged:
            return 0
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
