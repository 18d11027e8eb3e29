"""The Mux's conntrack settings (imperative shell over a pure core).

br-int tracks each VIP's connections in a zone of its own (controller/compile_mux.py). The
zones' timeout policy lives in OVSDB (it survives an ovs-vswitchd restart); the limits, and
turning off TCP sequence checking, are ovs-vswitchd runtime settings (`ovs-appctl dpctl/...`)
that a restart forgets, so the Mux agent checks them at every pass and sets them again.

Sequence checking is off because a Mux sees only the client's side of a connection (the
replies go straight from the hypervisor to the client): OVS's userspace conntrack would
otherwise mark a long upload's packets invalid once they pass the window it saw in the SYN.
"""

from __future__ import annotations

import logging
import re
import subprocess

from ananta.agent import ovs_env
from ananta.bridges import MUX_CT_TIMEOUTS, MUX_CT_ZONES
from ananta.mux.config import MuxConfig
from ananta.ovsdb import NodeOvsdb, OvsdbUnavailable
from ananta.shell import CommandFailed, run, run_all

LOG = logging.getLogger("ananta.mux.conntrack")
DATAPATH_TYPE = "netdev"


def runtime_commands(config: MuxConfig) -> list[list[str]]:
    """The ovs-appctl commands that set the limits and turn sequence checking off.

    Every zone gets its own limit: in OVS 3.1's userspace datapath the zones without one
    share the `default` limit's single count (so a default limit would be one budget for
    all the VIPs), and an explicit limit of 0 means no connection at all."""
    per_vip = config.connection_limit_per_vip
    return [
        ["ovs-appctl", "dpctl/ct-set-maxconns", str(config.connection_limit)],
        ["ovs-appctl", "dpctl/ct-set-limits",
         *(f"zone={z},limit={per_vip}" for z in range(1, MUX_CT_ZONES + 1))],
        ["ovs-appctl", "dpctl/ct-disable-tcp-seq-chk"],
    ]


CHECKED_ZONES = f"zone=1,{MUX_CT_ZONES}"


def zone_limits(ct_get_limits: str) -> dict[int, int]:
    """zone -> limit, from `ovs-appctl dpctl/ct-get-limits` output."""
    return {int(z): int(limit) for z, limit in
            re.findall(r"^zone=(\d+),limit=(\d+)", ct_get_limits, re.MULTILINE)}


class ConntrackSettings:
    """Keeps the Mux's conntrack settings in place; `check` is cheap enough for every pass
    (one ovs-appctl). It reads the zones from OVSDB (25 ms: thousands of rows) every
    `zones_every` passes, and at once when ovs-vswitchd has lost the limits (a restart)."""

    def __init__(self, config: MuxConfig, ovsdb: NodeOvsdb, zones_every: int = 15):
        self.config = config
        self.ovsdb = ovsdb
        self.zones_every = zones_every
        self.passes = 0

    def check(self) -> None:
        env = ovs_env(self.config)
        try:
            limits = zone_limits(run(["ovs-appctl", "dpctl/ct-get-limits", CHECKED_ZONES],
                                     env=env, timeout=3))
            per_vip = self.config.connection_limit_per_vip
            restarted = limits != {1: per_vip, MUX_CT_ZONES: per_vip}  # (or never set)
            if (restarted or self.passes % self.zones_every == 0) and not \
                    self.ovsdb.ct_zones_match(DATAPATH_TYPE, MUX_CT_ZONES, MUX_CT_TIMEOUTS):
                LOG.info("setting the timeout policy of conntrack zones 1-%d", MUX_CT_ZONES)
                self.ovsdb.set_ct_zones(DATAPATH_TYPE, MUX_CT_ZONES, MUX_CT_TIMEOUTS)
            self.passes += 1
            if restarted:
                LOG.info("setting conntrack limits (%d, %d per VIP), no TCP sequence checks",
                         self.config.connection_limit, per_vip)
                run_all(runtime_commands(self.config), env=env)
        except (OvsdbUnavailable, CommandFailed, OSError, subprocess.TimeoutExpired) as exc:
            LOG.warning("cannot check the conntrack settings: %s", exc)
