"""`ananta apply -f FILE`: the API requests that take the Manager from what it has to the
VIPs a services file describes (pure). Changes are made in place (endpoint by endpoint,
backend by backend) so that unchanged backends keep serving; a VIP whose address changes is
deleted and created again. VIPs absent from the file are left alone unless `prune`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ananta.controller.model import Services, Vip

API = "/api/v1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _vip_body(vip: Vip, tenant: str | None) -> dict[str, Any]:
    """A tenant's own token creates in its tenant; the admin names the tenant (`--tenant`),
    else the API's default."""
    body = vip.model_dump(mode="json")
    body.pop("tenant")
    return {**body, "tenant": tenant} if tenant else body


def plan_apply(current: list[Vip], desired: Services, prune: bool = False,
               tenant: str | None = None) -> list[Request]:
    have = {v.name: v for v in current}
    out: list[Request] = []
    for vip in desired.vips:
        old = have.get(vip.name)
        base = f"{API}/vips/{vip.name}"
        if old is None:
            out.append(Request("POST", f"{API}/vips", _vip_body(vip, tenant)))
            continue
        if old.address != vip.address:
            out += [Request("DELETE", base),
                    Request("POST", f"{API}/vips", _vip_body(vip, tenant))]
            continue
        old_eps = {(e.protocol, e.port): e for e in old.endpoints}
        new_eps = {(e.protocol, e.port): e for e in vip.endpoints}
        for key, ep in new_eps.items():
            if key not in old_eps:
                out.append(Request("POST", f"{base}/endpoints", ep.model_dump(mode="json")))
                continue
            backends = f"{base}/endpoints/{key[0]}/{key[1]}/backends"
            old_bes = {b.address: b for b in old_eps[key].backends}
            new_bes = {b.address: b for b in ep.backends}
            for address, be in new_bes.items():
                was = old_bes.get(address)
                if was is None or was.port != be.port:
                    if was is not None:
                        out.append(Request("DELETE", f"{backends}/{address}"))
                    out.append(Request("POST", backends, be.model_dump(mode="json")))
                elif (was.weight, was.state) != (be.weight, be.state):
                    out.append(Request("PATCH", f"{backends}/{address}",
                                       {"weight": be.weight, "state": be.state}))
            for address in old_bes.keys() - new_bes.keys():
                out.append(Request("DELETE", f"{backends}/{address}"))
        for key in old_eps.keys() - new_eps.keys():
            out.append(Request("DELETE", f"{base}/endpoints/{key[0]}/{key[1]}"))
        if old.rate_limit_pps != vip.rate_limit_pps:
            out.append(Request("PUT", f"{base}/rate-limit",
                               {"rate_limit_pps": vip.rate_limit_pps}))
    if prune:
        wanted = {v.name for v in desired.vips}
        out += [Request("DELETE", f"{API}/vips/{name}")
                for name in sorted(have) if name not in wanted]
    return out


def ipvsadm_table(vips: list[Vip]) -> str:
    """The VIPs as `ipvsadm -L -n` would show them."""
    lines = ["Prot LocalAddress:Port Scheduler   Tenant/Name",
             "  -> RemoteAddress:Port           Weight State"]
    for vip in vips:
        for ep in vip.endpoints:
            limit = f" (limit {vip.rate_limit_pps} pps)" if vip.rate_limit_pps else ""
            lines.append(f"{ep.protocol.upper():4} {vip.address + ':' + str(ep.port):21} "
                         f"{'hash':11} {vip.tenant}/{vip.name}{limit}")
            for be in ep.backends:
                lines.append(f"  -> {be.address + ':' + str(be.port):28} {be.weight:>6} "
                             f"{be.state}")
    return "\n".join(lines)
