"""Outbound connections through SNAT (lab workload for tests and benchmarks).

`serve --port P` (on an outside node): accept TCP connections forever; answer each with the
address and port it came from ("ip:port\\n"), then close.

`connect --host H --port P --count N [--parallel K]` (in a VM): open N connections, K at a
time, read the answer of each, and print {"sent", "failures", "seen_from": {ip: n},
"ports": [..], "connect_ms": {"p50", "p99"}}: what the outside server saw as their source.
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import time
from concurrent.futures import ThreadPoolExecutor


class Reporter(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        host, port = self.client_address[:2]
        self.request.sendall(f"{host}:{port}\n".encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def one(host: str, port: int, timeout: float) -> tuple[str | None, float, str | None]:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            connected = (time.monotonic() - start) * 1000
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip(), connected, None
    except OSError as exc:
        return None, (time.monotonic() - start) * 1000, f"{type(exc).__name__}: {exc}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("--port", type=int, required=True)
    cn = sub.add_parser("connect")
    cn.add_argument("--host", required=True)
    cn.add_argument("--port", type=int, required=True)
    cn.add_argument("--count", type=int, default=10)
    cn.add_argument("--parallel", type=int, default=1)
    cn.add_argument("--timeout", type=float, default=5.0)
    cn.add_argument("--times", action="store_true", help="also print every connect time")
    args = ap.parse_args()
    if args.cmd == "serve":
        with Server(("0.0.0.0", args.port), Reporter) as server:
            server.serve_forever()
        return
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(lambda _: one(args.host, args.port, args.timeout),
                                range(args.count)))
    seen: dict[str, int] = {}
    ports, failures, times = [], [], []
    for answer, ms, error in results:
        if error or not answer:
            failures.append(error or "no answer")
            continue
        ip, _, port = answer.rpartition(":")
        seen[ip] = seen.get(ip, 0) + 1
        ports.append(int(port))
        times.append(ms)
    out = {"sent": args.count, "failures": failures, "seen_from": seen, "ports": ports,
           "connect_ms": {"p50": percentile(times, 50), "p99": percentile(times, 99)}}
    if args.times:
        out["times_ms"] = times
    print(json.dumps(out))


if __name__ == "__main__":
    main()
