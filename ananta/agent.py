"""The node agents' shared shell: converge a node's OVS bridges and uplink, idempotently."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ananta.bridges import BR_INT, BR_PHY
from ananta.node import NodeConfig, VmPort, host_network_commands, ovs_bootstrap_args
from ananta.shell import run, run_all


def ovs_env(config: NodeConfig) -> dict[str, str]:
    return {**os.environ, "OVS_RUNDIR": config.ovs_rundir}


def converge(config: NodeConfig, vms: Sequence[VmPort] = ()) -> None:
    env = ovs_env(config)
    run(ovs_bootstrap_args(config, vms), env=env)
    run_all(host_network_commands(config, vms), env=env)


def bridges_present(config: NodeConfig) -> bool:
    out = run(["ovs-vsctl", "--timeout=5", "list-br"], env=ovs_env(config), check=False)
    return {BR_INT, BR_PHY} <= set(out.split())
