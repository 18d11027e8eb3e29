"""`ananta`: the command line for tenants, operators and lab users.

API commands (vip, backend, tenant, cluster, apply) talk to the Manager's REST API; see
ananta/client.py for where the endpoint and token come from. `lab` and `demo` manage the
emulated Clos lab on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ananta.config import InvalidConfig


def _lab(args: argparse.Namespace) -> int:
    from ananta.topologies import lab

    if args.lab_cmd == "up":
        if lab.is_up():
            print("a lab is already up; `ananta lab status` shows it, `ananta lab down` removes it")
            return 0
        lab.up(args.spec, args.services, timeout=args.timeout)
        print("lab is up: `ananta lab status`, `ananta demo`, `ananta lab down`")
        return 0
    if args.lab_cmd == "status":
        state = lab.status()
        if args.json:
            print(json.dumps(state, indent=1))
        else:
            if not state["up"]:
                print("no lab is up")
                return 1
            print(f"lab: {'ready' if state['ready'] else 'NOT ready'}  VIPs: "
                  f"{', '.join(state['vips'])}")
            for p in state["problems"]:
                print(f"  problem: {p}")
            print(f"{'NODE':10} {'ROLE':11} ADDRESSES")
            for n in state["nodes"]:
                print(f"{n['name']:10} {n['role']:11} {' '.join(n['addresses'])}")
        return 0 if state["ready"] else 1
    if args.lab_cmd == "exec":
        if not lab.is_up():
            print("no lab is up", file=sys.stderr)
            return 1
        argv = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not argv:
            print("give a command after --", file=sys.stderr)
            return 2
        full = lab.exec_argv(args.node, argv)
        os.execvp(full[0], full)
    if args.lab_cmd == "down":
        if not lab.down():
            print("no lab is up; nothing to remove")
        return 0
    return 2


def _chaos(args: argparse.Namespace) -> int:
    from ananta.topologies import chaos, lab

    if args.chaos_cmd == "list":
        for s in chaos.SCENARIOS.values():
            print(f"{s.name:24} {s.summary}")
        return 0
    if not lab.is_up():
        print("no lab is up: `ananta lab up` first", file=sys.stderr)
        return 1
    names = list(chaos.SCENARIOS) if args.scenario == "all" else [args.scenario]
    unmet = 0
    for name in names:
        try:
            result = chaos.run(name, say=(lambda _: None) if args.json else print)
        except (RuntimeError, OSError, ValueError) as exc:  # the next scenario may still run
            print(f"{name}: the scenario failed to run: {exc}", file=sys.stderr)
            unmet += 1
            continue
        unmet += bool(result["unmet"])
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            cost = result["cost"]
            print(f"{name}: recovery {cost['recovery_s']} s (after repair "
                  f"{cost['repair_recovery_s']} s); established broken "
                  f"{cost['established_broken']}/{cost['established']} "
                  f"(+{cost['established_broken_exempt']} on the faulted backend); new "
                  f"connections failed {cost['new_failed']}/{cost['new_attempted']}, slow "
                  f"{cost['new_slow']}; writes committed {cost['committed_acked']}, lost "
                  f"{len(cost['committed_lost'])}, longest write gap "
                  f"{cost['longest_write_gap_s']} s")
            for u in result["unmet"]:
                print(f"  goal not met: {u}")
    return 1 if unmet else 0


def _endpoint_spec(text: str) -> tuple[str, int]:
    proto, _, port = text.partition(":")
    if proto not in ("tcp", "udp") or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want PROTOCOL:PORT (e.g. tcp:80), got {text!r}")
    return proto, int(port)


def _backend_spec(text: str) -> dict[str, object]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"want ADDRESS:PORT[:WEIGHT], got {text!r}")
    backend: dict[str, object] = {"address": parts[0], "port": int(parts[1])}
    if len(parts) == 3:
        backend["weight"] = int(parts[2])
    return backend


def _show(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=1) if args.json else text)


def _op_line(op: dict[str, object]) -> str:
    line = f"operation {op['op_id']}: {op['status']} (generation {op['generation']})"
    if op.get("programmed_at") and op.get("committed_at"):
        ms = (float(op["programmed_at"]) - float(op["committed_at"])) * 1000  # type: ignore[arg-type]
        line += f", programmed {ms:.1f} ms after the write"
    return line


def _mux(args: argparse.Namespace, client: Any) -> int:
    def muxes() -> list[dict[str, Any]]:
        return list(client.call("GET", "/api/v1/muxes"))

    if args.mux_cmd == "list":
        rows = muxes()
        _show(args, rows, "\n".join(
            f"{m['name']:10} {m['underlay_address']:15} "
            f"{'draining' if m.get('draining') else 'in service':11} "
            f"{'drained' if m.get('drained') else ''}" for m in rows))
        return 0
    if args.mux_cmd == "undrain":
        op = client.call("DELETE", f"/api/v1/muxes/{args.name}/drain")
        _show(args, op, _op_line(op))
        return 0
    op = client.call("POST", f"/api/v1/muxes/{args.name}/drain")
    if args.wait:
        client.wait_programmed(op["op_id"])
        deadline = time.monotonic() + args.timeout
        while True:
            mine = next(m for m in muxes() if m["name"] == args.name)
            if mine.get("drained"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args.name}: routers still send to it after "
                                   f"{args.timeout:.0f} s (is BGP withdrawing?)")
            time.sleep(0.5)
        op = {**op, "drained": True}
    _show(args, op, f"{args.name} drained: no VIP traffic reaches it" if op.get("drained")
          else _op_line(op))
    return 0


def _api(args: argparse.Namespace) -> int:
    from ananta.apply_plan import ipvsadm_table, plan_apply
    from ananta.client import Client, resolve
    from ananta.config import load_yaml_file
    from ananta.controller.model import Services, Vip

    endpoint = resolve(args.url, args.token)
    if endpoint.netns and os.environ.get("ANANTA_IN_NETNS") != endpoint.netns:
        os.environ["ANANTA_IN_NETNS"] = endpoint.netns
        argv = ["ip", "netns", "exec", endpoint.netns, sys.executable, "-m", "ananta.cli",
                *sys.argv[1:]]
        os.execvp(argv[0], argv)
    client = Client(endpoint)
    q = f"?tenant={args.tenant}" if getattr(args, "tenant", None) else ""

    def write(method: str, path: str, body: object = None) -> int:
        op = client.call(method, path + q, body)
        if args.wait:
            op = client.wait_programmed(op["op_id"])
        _show(args, op, _op_line(op))
        return 0

    cmd = args.cmd
    if cmd == "cluster":
        st = client.call("GET", "/api/v1/cluster")
        _show(args, st, "\n".join(f"{k:14} {v}" for k, v in st.items()))
        return 0
    if cmd == "health":
        down = client.call("GET", "/api/v1/health")
        _show(args, down, "\n".join(down) if down else "no backend is reported down")
        return 0
    if cmd == "snat":
        blocks = client.call("GET", "/api/v1/snat")
        _show(args, blocks, "\n".join(f"{b['dip']:15} -> {b['vip']}:{b['start']}-{b['end']}"
                                      for b in blocks) or "no SNAT block")
        return 0
    if cmd == "tenant":
        if args.tenant_cmd == "list":
            names = client.call("GET", "/api/v1/tenants")
            _show(args, names, "\n".join(t["name"] for t in names))
            return 0
        if args.tenant_cmd == "create":
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
            return write("POST", "/api/v1/tenants", {"name": args.name, "token": token})
        return write("DELETE", f"/api/v1/tenants/{args.name}")
    if cmd == "vip":
        if args.vip_cmd == "list":
            vips = client.call("GET", "/api/v1/vips")
            _show(args, vips, ipvsadm_table([Vip.model_validate(v) for v in vips]))
            return 0
        if args.vip_cmd == "show":
            vip = client.call("GET", f"/api/v1/vips/{args.name}{q}")
            _show(args, vip, ipvsadm_table([Vip.model_validate(vip)]))
            return 0
        if args.vip_cmd == "slots":
            proto, port = args.endpoint
            if args.rebuild:
                return write("POST", f"/api/v1/vips/{args.name}/endpoints/{proto}/{port}"
                             "/slots/rebuild")
            table = client.call("GET", f"/api/v1/vips/{args.name}/endpoints/{proto}/{port}"
                                f"/slots{q}")
            split = len(table["split"])
            lines = [f"{dip:15} {n:6} slots  {100 * n / 65536:6.2f}%"
                     for dip, n in sorted(table["counts"].items())]
            lines.append(f"{256 - split} whole bins, {split} split" if table["whole"]
                         else "no backend takes new connections")
            _show(args, table, "\n".join(lines))
            return 0
        if args.vip_cmd == "delete":
            return write("DELETE", f"/api/v1/vips/{args.name}")
        if args.vip_cmd == "limit":
            return write("PUT", f"/api/v1/vips/{args.name}/rate-limit",
                         {"rate_limit_pps": args.pps})
        endpoints = [{"protocol": p, "port": n, "backends": args.backend}
                     for p, n in args.endpoint]
        body = {"name": args.name, "address": args.address, "endpoints": endpoints}
        if args.tenant:
            body["tenant"] = args.tenant
        op = client.call("POST", "/api/v1/vips", body)
        if args.wait:
            op = client.wait_programmed(op["op_id"])
        _show(args, op, _op_line(op))
        return 0
    if cmd == "backend":
        proto, port = args.endpoint
        base = f"/api/v1/vips/{args.vip}/endpoints/{proto}/{port}/backends"
        if args.backend_cmd == "add":
            return write("POST", base, args.backend)
        address = str(args.backend["address"])
        if args.backend_cmd == "drain":
            return write("POST", f"{base}/{address}/drain",
                         {"deadline_s": args.deadline} if args.deadline else None)
        return write("DELETE", f"{base}/{address}")
    if cmd == "mux":
        return _mux(args, client)
    if cmd == "apply":
        desired = load_yaml_file(Services, args.file)
        current = [Vip.model_validate(v) for v in client.call("GET", "/api/v1/vips")]
        if args.tenant:
            current = [v for v in current if v.tenant == args.tenant]
        requests = plan_apply(current, desired, prune=args.prune, tenant=args.tenant)
        if not requests:
            print("nothing to change")
        last = None
        for req in requests:
            last = client.call(req.method, req.path + q, req.body)
            print(f"{req}: {_op_line(last)}")
        if last is not None and args.wait:
            print(_op_line(client.wait_programmed(last["op_id"])))
        return 0
    return 2


def _demo(args: argparse.Namespace) -> int:
    from ananta.demo import run_demo

    return run_demo(count=args.count)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ananta", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lab_p = sub.add_parser("lab", help="the emulated Clos lab")
    lab_sub = lab_p.add_subparsers(dest="lab_cmd", required=True)
    up = lab_sub.add_parser("up", help="build and start the lab; return when it is ready")
    up.add_argument("--spec", help="lab spec YAML (default: the packaged default.yaml)")
    up.add_argument("--services", help="services YAML (default: the demo VIP)")
    up.add_argument("--timeout", type=float, default=120)
    st = lab_sub.add_parser("status", help="nodes, addresses and readiness")
    st.add_argument("--json", action="store_true")
    ex = lab_sub.add_parser("exec", help="run a command in a node's namespace")
    ex.add_argument("node")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    lab_sub.add_parser("down", help="remove everything the lab made")
    chaos_p = sub.add_parser("chaos", help="inject a fault into the lab under load; report "
                             "what it cost")
    chaos_sub = chaos_p.add_subparsers(dest="chaos_cmd", required=True)
    chaos_sub.add_parser("list", help="the scenarios")
    cr = chaos_sub.add_parser("run", help="run a scenario (or all) on the running lab")
    cr.add_argument("scenario", help="a name from `ananta chaos list`, or all")
    cr.add_argument("--json", action="store_true", help="one JSON document per scenario")
    demo = sub.add_parser("demo", help="bring the lab up if needed and show the VIP served")
    demo.add_argument("--count", type=int, default=200)

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--url", help="Manager API, e.g. http://198.19.0.11:8080")
    api.add_argument("--token", help="bearer token (tenant or admin)")
    api.add_argument("--json", action="store_true", help="print JSON")
    write = argparse.ArgumentParser(add_help=False, parents=[api])
    write.add_argument("--tenant", help="(admin) act on this tenant's VIPs")
    write.add_argument("--no-wait", dest="wait", action="store_false",
                       help="return once committed, not once every switch is programmed")

    sub.add_parser("cluster", parents=[api], help="Raft status of the replica answering")
    sub.add_parser("health", parents=[api], help="(admin) backends their host agents report down")
    sub.add_parser("snat", parents=[api], help="(admin) every DIP's SNAT port blocks")
    tenant = sub.add_parser("tenant", help="tenants (admin)")
    tsub = tenant.add_subparsers(dest="tenant_cmd", required=True)
    tsub.add_parser("list", parents=[api])
    tc = tsub.add_parser("create", parents=[write])
    tc.add_argument("name")
    tc.add_argument("--token-file", required=True, help="file holding the tenant's token")
    td = tsub.add_parser("delete", parents=[write])
    td.add_argument("name")

    vip = sub.add_parser("vip", help="VIPs of your tenant (all of them for the admin)")
    vsub = vip.add_subparsers(dest="vip_cmd", required=True)
    vsub.add_parser("list", parents=[api])
    vs = vsub.add_parser("show", parents=[write])
    vs.add_argument("name")
    vc = vsub.add_parser("create", parents=[write])
    vc.add_argument("name")
    vc.add_argument("--address", required=True)
    vc.add_argument("--endpoint", type=_endpoint_spec, action="append", required=True,
                    help="PROTOCOL:PORT (repeatable)")
    vc.add_argument("--backend", type=_backend_spec, action="append", required=True,
                    help="ADDRESS:PORT[:WEIGHT] (repeatable; every endpoint gets them all)")
    vslots = vsub.add_parser("slots", parents=[write], help="the endpoint's lookup table of "
                             "new connections: each DIP's share of the slots")
    vslots.add_argument("name")
    vslots.add_argument("endpoint", type=_endpoint_spec, help="PROTOCOL:PORT")
    vslots.add_argument("--rebuild", action="store_true", help="build the table afresh (fewest "
                        "split flows); moves new connections' choices, not established ones")
    vd = vsub.add_parser("delete", parents=[write])
    vd.add_argument("name")
    vl = vsub.add_parser("limit", parents=[write], help="packets/s every Mux lets through to "
                         "the VIP's endpoints (an OpenFlow meter); `none` removes the limit")
    vl.add_argument("name")
    vl.add_argument("pps", type=lambda t: None if t == "none" else int(t), help="PPS or none")

    backend = sub.add_parser("backend", help="backends of a VIP endpoint")
    bsub = backend.add_subparsers(dest="backend_cmd", required=True)
    for name in ("add", "remove", "drain"):
        b = bsub.add_parser(name, parents=[write])
        b.add_argument("vip")
        b.add_argument("endpoint", type=_endpoint_spec, help="PROTOCOL:PORT")
        b.add_argument("backend", type=_backend_spec if name == "add" else
                       (lambda t: {"address": t.split(":")[0]}),
                       help="ADDRESS:PORT[:WEIGHT]" if name == "add" else "ADDRESS")
        if name == "drain":
            b.add_argument("--deadline", type=int, metavar="SECONDS",
                           help="then make it inactive, cutting what is left of its connections")

    mux = sub.add_parser("mux", help="(admin) the Mux pool")
    msub = mux.add_subparsers(dest="mux_cmd", required=True)
    msub.add_parser("list", parents=[api])
    md = msub.add_parser("drain", parents=[write], help="withdraw a Mux's VIPs from BGP and "
                         "wait until routers stop sending to it")
    md.add_argument("name")
    md.add_argument("--timeout", type=float, default=60.0)
    mu = msub.add_parser("undrain", parents=[write], help="put a drained Mux back into service")
    mu.add_argument("name")

    apply = sub.add_parser("apply", parents=[write], help="make the VIPs match a services YAML")
    apply.add_argument("-f", "--file", required=True)
    apply.add_argument("--prune", action="store_true", help="also delete VIPs not in the file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "lab":
            return _lab(args)
        if args.cmd == "demo":
            return _demo(args)
        if args.cmd == "chaos":
            return _chaos(args)
        return _api(args)
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    except RuntimeError as exc:  # LabError, CommandFailed, ApiError
        print(f"ananta: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
