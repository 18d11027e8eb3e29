"""The node agents' shared shell: converge a node's OVS bridges and uplink, idempotently."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ananta.bridges import BR_INT, BR_PHY
from ananta.config import InvalidConfig
from ananta.node import BridgeSpec, NodeConfig, VmPort, host_network_commands, vswitchd_options
from ananta.ovsdb import NodeOvsdb, OvsdbUnavailable
from ananta.shell import CommandFailed, run_all

LOG = logging.getLogger("ananta.agent")
CHECK_INTERVAL = 2.0
C = TypeVar("C")


def ovs_env(config: NodeConfig) -> dict[str, str]:
    return {**os.environ, "OVS_RUNDIR": config.ovs_rundir}


def converge(config: NodeConfig, ovsdb: NodeOvsdb, specs: Sequence[BridgeSpec],
             vms: Sequence[VmPort] = ()) -> None:
    ovsdb.apply(specs, vswitchd_options(config))
    run_all(host_network_commands(config, vms), env=ovs_env(config))


def bridges_present(ovsdb: NodeOvsdb, specs: Sequence[BridgeSpec] = ()) -> bool:
    """Both bridges are there, with every port `specs` gives them (a port deleted by hand, or
    a VM's, is put back at the next check)."""
    try:
        if not ({BR_INT, BR_PHY} <= ovsdb.bridges() and ovsdb.connected()):
            return False
        return all({p.name for p in b.ports} <= ovsdb.ports(b.name) for b in specs)
    except OvsdbUnavailable:
        return False


def agent_arguments(prog: str, description: str | None, argv: list[str] | None,
                    once: bool = True) -> argparse.Namespace:
    """The command line every daemon shares (--config, --check-config, --log-level, and for
    the node agents --once); also sets up logging."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", required=True)
    ap.add_argument("--check-config", action="store_true",
                    help="validate the config file, then exit")
    if once:
        ap.add_argument("--once", action="store_true", help="bootstrap the bridges, then exit")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args


def load_or_report(loader: Callable[[str], C], args: argparse.Namespace) -> C | int:
    """The config, or an exit code after printing why it was refused / that it is fine."""
    try:
        config = loader(args.config)
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_config:
        print("config OK")
        return 0
    return config


def keep_converged(config: NodeConfig, specs: Sequence[BridgeSpec], vms: Sequence[VmPort],
                   once: bool, after_each_check: Callable[[], None],
                   extra: Sequence[Sequence[str]] = (),
                   interval: float = CHECK_INTERVAL, ovsdb: NodeOvsdb | None = None) -> int:
    """Converge the bridges through OVSDB (then run `extra`), and re-check every `interval`
    s: an OVS restart loses them. `ovsdb`: the agent's OVSDB client, if it has one already
    (each client keeps a whole copy of the database)."""
    ovsdb = ovsdb or NodeOvsdb(config.ovs_rundir)
    converged = False
    while True:
        try:
            if not converged or not bridges_present(ovsdb, specs):
                converge(config, ovsdb, specs, vms)
                run_all(extra, env=ovs_env(config))
                converged = True
                LOG.info("%s: bridges converged (%d VM ports)", config.name, len(vms))
        except (OvsdbUnavailable, CommandFailed, subprocess.TimeoutExpired, OSError) as exc:
            converged = False
            LOG.error("bootstrap failed, retrying: %s", exc)
        if converged:
            if once:
                return 0
            after_each_check()
        time.sleep(interval)
