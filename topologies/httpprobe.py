"""Send N HTTP requests, each on a new TCP connection (or, with --keepalive, all on one), and
count who served them.

Run inside a lab client namespace (`ananta lab exec client1 -- python -m ...`); prints JSON:
{"sent": N, "served_by": {"vm1": 27, ...}, "failures": [...], "latency_ms": {"p50":..,"p99":..}}
and, with --times, every request's latency in ms ("times_ms").
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections import Counter


def probe(host: str, port: int, count: int, timeout: float,
          keepalive: bool = False) -> dict[str, object]:
    """A request's latency counts from before its connect (after the first, with keepalive)
    to its last byte."""
    served: Counter[str] = Counter()
    failures: list[str] = []
    latencies: list[float] = []
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    for i in range(count):
        t0 = time.monotonic()
        if not keepalive:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/", headers={} if keepalive else {"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status != 200 or not body.startswith("served-by "):
                failures.append(f"request {i}: HTTP {resp.status} {body[:60]!r}")
                continue
            served[body.split()[1]] += 1
            latencies.append((time.monotonic() - t0) * 1000)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"request {i}: {type(exc).__name__}: {exc}")
            conn.close()  # (a keep-alive connection reconnects on the next request)
        finally:
            if not keepalive:
                conn.close()
    conn.close()
    lat = sorted(latencies)
    return {
        "sent": count,
        "served_by": dict(sorted(served.items())),
        "failures": failures,
        "latency_ms": {
            "p50": round(statistics.median(lat), 2) if lat else None,
            "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
        },
        "times_ms": [round(t, 3) for t in latencies],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--keepalive", action="store_true", help="every request on one connection")
    ap.add_argument("--times", action="store_true", help="also print every latency")
    args = ap.parse_args()
    result = probe(args.host, args.port, args.count, args.timeout, args.keepalive)
    if not args.times:
        del result["times_ms"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
