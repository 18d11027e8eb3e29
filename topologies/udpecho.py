"""UDP echo for the lab (a workload, not a daemon), to test datagrams big enough to fragment.

    python -m ananta.topologies.udpecho serve --port 5353 --name vm1
        answers each datagram with "<name> " + the datagram (so the reply is bigger still)
    python -m ananta.topologies.udpecho ask --dst 203.0.113.10 --port 53 --sizes 400,4000 \
            --count 20 --flows 8
        from each of FLOWS source ports, sends COUNT datagrams of random bytes, one at a time,
        cycling through SIZES; prints JSON: how many came back whole, from which address,
        which VMs answered, how many flows (5-tuples) more than one VM answered, and the
        round-trip times (p50, p99) of those that came back whole
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time


def serve(port: int, name: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    tag = name.encode() + b" "
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(tag + data, peer)


def ask(dst: str, port: int, sizes: list[int], count: int, flows: int,
        timeout: float) -> dict[str, object]:
    whole, lost, wrong, split = 0, 0, 0, 0
    sources: set[str] = set()
    served: dict[str, int] = {}
    rtts: list[float] = []
    for _ in range(flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(timeout)
        names: set[str] = set()
        for i in range(count):
            payload = os.urandom(sizes[i % len(sizes)])
            sent_at = time.perf_counter()
            sock.sendto(payload, (dst, port))
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                lost += 1
                continue
            sources.add(f"{peer[0]}:{peer[1]}")
            name, _, echoed = data.partition(b" ")
            if echoed == payload:
                rtts.append((time.perf_counter() - sent_at) * 1000)
                whole += 1
                names.add(name.decode())
                served[name.decode()] = served.get(name.decode(), 0) + 1
            else:
                wrong += 1
        split += len(names) > 1
        sock.close()
    rtts.sort()
    rtt = ({"p50": round(rtts[len(rtts) // 2], 3), "p99": round(rtts[int(len(rtts) * 0.99)], 3)}
           if rtts else {})
    return {"sent": count * flows, "whole": whole, "lost": lost, "wrong": wrong,
            "sources": sorted(sources), "served_by": served, "flows_split": split,
            "rtt_ms": rtt}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="udpecho", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    a = sub.add_parser("ask")
    a.add_argument("--dst", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--sizes", default="4000", help="comma-separated datagram sizes")
    a.add_argument("--count", type=int, default=20, help="datagrams per flow")
    a.add_argument("--flows", type=int, default=1, help="source ports, one after another")
    a.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.name)
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    print(json.dumps(ask(args.dst, args.port, sizes, args.count, args.flows, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
