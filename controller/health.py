"""What each host agent probes (pure): the backends on its VMs, with their endpoints' checks."""

from __future__ import annotations

from ananta.config import StrictModel
from ananta.controller.model import HealthCheck, backend_key
from ananta.controller.state import ClusterState


class ProbeTarget(StrictModel):
    address: str
    port: int
    check: HealthCheck
    down: bool  # as the cluster has it now


def probe_targets(state: ClusterState, host: str) -> list[ProbeTarget]:
    """One target per backend address:port on `host`'s VMs; when several endpoints share a
    backend, the first endpoint's check (by VIP and endpoint order) is used."""
    node = next((h for h in state.inventory.hosts if h.name == host), None)
    if node is None:
        return []
    own = {vm.address for vm in node.vms}
    targets: dict[str, ProbeTarget] = {}
    for vip in state.services().vips:
        for ep in vip.endpoints:
            if ep.health_check.type == "none":
                continue
            for be in ep.backends:
                key = backend_key(be.address, be.port)
                if be.address in own and key not in targets:
                    targets[key] = ProbeTarget(address=be.address, port=be.port,
                                               check=ep.health_check, down=key in state.down)
    return [targets[k] for k in sorted(targets)]
