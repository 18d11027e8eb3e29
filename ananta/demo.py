"""`ananta demo`: bring the lab up if needed, then show the VIP served with DSR."""

from __future__ import annotations

from ananta.topologies import lab
from ananta.topologies.checks import serve_check


def run_demo(count: int = 200) -> int:
    if not lab.is_up():
        print("bringing the lab up (ananta lab up) ...")
        lab.up(None, None)
    plan, services = lab.load_plan()
    ok = True
    for vip in services.vips:
        for ep in vip.endpoints:
            if ep.protocol != "tcp":
                continue
            print(f"\nVIP {vip.name} {vip.address}:{ep.port}: {count} HTTP requests from "
                  f"client1 ({plan.nodes['client1'].addresses[0]}), each a new connection")
            report = serve_check(vip.address, count, ep.port)
            backends = {be.address: be for be in ep.backends}
            vm_of = {n.name: n for n in plan.by_role("vm")}
            total_weight = sum(be.weight for be in ep.backends if be.takes_new_connections)
            print(f"  {'backend':8} {'DIP:port':16} {'weight':>6} {'share':>7} {'replies':>8}")
            for name, vm in sorted(vm_of.items()):
                dip = vm.addresses[0].split("/")[0]
                if dip not in backends:
                    continue
                be = backends[dip]
                n = report.served_by.get(name, 0)
                print(f"  {name:8} {dip + ':' + str(be.port):16} {be.weight:>6} "
                      f"{100 * n / max(1, report.sent):6.1f}% {n:>8}   "
                      f"(expected {100 * be.weight / max(1, total_weight):.0f}%)")
            print(f"  failures: {len(report.failures)}  latency p50 "
                  f"{report.latency_ms['p50']} ms, p99 {report.latency_ms['p99']} ms")
            for f in report.failures[:5]:
                print(f"    {f}")
            print("  packets to the VIP through each Mux (endpoint flow counters): " + ", ".join(
                f"{m} {n}" for m, n in report.mux_endpoint_packets.items()))
            print("  packets with source VIP leaving each node's uplink (tcpdump): " + ", ".join(
                f"{node} {n}" for node, n in report.vip_packets_leaving.items()))
            dsr = report.dsr_ok(plan)
            print("  Direct Server Return: " + (
                "yes, replies leave the hypervisors and never cross a Mux" if dsr
                else "NO: a Mux sent packets from the VIP (or none seen)"))
            all_served = len(report.served_by) == len(ep.backends)
            ok = ok and dsr and all_served and not report.failures
    print("\nThe lab stays up: `ananta lab status`, `ananta lab exec NODE -- CMD`; "
          "tear it down with `ananta lab down` (or `make down`).")
    return 0 if ok else 1
