"""`ananta`: the operator's command line (lab management and the demo, for now)."""

from __future__ import annotations

import argparse
import json
import os
import sys

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
    demo = sub.add_parser("demo", help="bring the lab up if needed and show the VIP served")
    demo.add_argument("--count", type=int, default=200)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "lab":
            return _lab(args)
        if args.cmd == "demo":
            return _demo(args)
    except InvalidConfig as exc:
        print(exc, file=sys.stderr)
        return 2
    except RuntimeError as exc:  # LabError, CommandFailed
        print(f"ananta: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
