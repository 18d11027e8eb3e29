"""Send N HTTP requests, each on a new TCP connection, and count who served them.

Run inside a lab client namespace (`ananta lab exec client1 -- python -m ...`); prints JSON:
{"sent": N, "served_by": {"vm1": 27, ...}, "failures": [...], "latency_ms": {"p50":..,"p99":..}}
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections import Counter


def probe(host: str, port: int, count: int, timeout: float) -> dict[str, object]:
    served: Counter[str] = Counter()
    failures: list[str] = []
    latencies: list[float] = []
    for i in range(count):
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status != 200 or not body.startswith("served-by "):
                failures.append(f"request {i}: HTTP {resp.status} {body[:60]!r}")
                continue
            served[body.split()[1]] += 1
            latencies.append((time.monotonic() - t0) * 1000)
        except OSError as exc:
            failures.append(f"request {i}: {type(exc).__name__}: {exc}")
        finally:
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
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    print(json.dumps(probe(args.host, args.port, args.count, args.timeout)))


if __name__ == "__main__":
    main()
