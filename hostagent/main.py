"""`ananta-hostagent --config FILE`: bootstrap this hypervisor's OVS and keep it converged.

It makes br-phy (uplink, underlay address) and br-int (GRE, VM ports, patch ports) exist with
every Manager as controller, then checks every few seconds that they still do (an OVS restart
loses nothing the agent cannot put back; the Manager reprograms the flows on reconnect) and
ARPs the router (see refresh_router_mac).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from ananta.agent import agent_arguments, keep_converged, load_or_report, ovs_env
from ananta.bridges import GATEWAY_MAC
from ananta.hostagent.config import HostAgentConfig, load_hostagent_config
from ananta.hostagent.manager_api import ManagerApi
from ananta.hostagent.monitor import HealthMonitor
from ananta.hostagent.snat_watch import SnatWatch
from ananta.node import bridge_specs, probe_port_commands
from ananta.shell import CommandFailed, run

ROUTER_MAC_REFRESH = 0.5
_NW_DST = re.compile(r"\bnw_dst=(\d+\.\d+\.\d+\.\d+)\b")


def refresh_router_mac(config: HostAgentConfig) -> None:
    """ARP the router: its reply, seen on the uplink, (re)teaches br-phy the router's MAC.

    That learned flow sends Direct Server Return replies to the router; an OVS restart or a
    switch reprogramming loses it, so the agent re-teaches it at every check (0.5 s).
    """
    run(["arping", "-q", "-c", "1", "-w", "1", "-I", "br-phy", config.uplink.gateway],
        env=ovs_env(config), check=False, timeout=5)


def probe_paths(config: HostAgentConfig) -> frozenset[str] | None:
    """The VM addresses br-int has a probe flow to (from LOCAL) now; None if OVS is down."""
    try:
        out = run(["ovs-ofctl", "--no-names", "-O", "OpenFlow15", "dump-flows", "br-int",
                   "table=0,ip,in_port=LOCAL"], env=ovs_env(config), timeout=2)
    except (CommandFailed, OSError, subprocess.TimeoutExpired):
        return None
    return frozenset(m.group(1) for m in _NW_DST.finditer(out))


def main(argv: list[str] | None = None) -> int:
    args = agent_arguments("ananta-hostagent", __doc__, argv)
    config = load_or_report(load_hostagent_config, args)
    if isinstance(config, int):
        return config
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if config.manager_api and not args.once:
        with open(config.agent_token_file or "", encoding="utf-8") as fh:
            token = fh.readline().strip()
        api = ManagerApi(config.manager_api, token)
        HealthMonitor(config.name, api, lambda: probe_paths(config)).start()
        SnatWatch(config.name, ManagerApi(config.manager_api, token), ovs_env(config)).start()

    # every 0.5 s: after an OVS restart, replies wait for the router's MAC to be re-learnt
    specs = bridge_specs(config, config.vms,
                         int_hwaddr=GATEWAY_MAC if config.probe_addresses else None)
    return keep_converged(config, specs, config.vms, args.once,
                          lambda: refresh_router_mac(config),
                          extra=probe_port_commands(config.probe_addresses),
                          interval=ROUTER_MAC_REFRESH)


if __name__ == "__main__":
    sys.exit(main())
