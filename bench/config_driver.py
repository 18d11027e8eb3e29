"""The client side of bench/config_latency.py; runs inside the lab's management network.

    latency  --rate R --count N   open-loop writes at R/s, then each one's commit latency
                                  (client) and REST-write -> programmed latency (server stamps)
    failover --pid P              SIGKILL the leader, then time until a write commits

Reads ANANTA_TOKEN (a tenant token) and ANANTA_URLS (comma-separated replica API URLs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

PATH = "/api/v1/vips/web/endpoints/tcp/80/backends/10.1.0.11"


def client() -> tuple[httpx.Client, list[str]]:
    token = os.environ["ANANTA_TOKEN"]
    urls = os.environ["ANANTA_URLS"].split(",")
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=5.0), urls


def latency(rate: float, count: int) -> dict[str, Any]:
    http, urls = client()

    def write(i: int) -> dict[str, Any]:
        t0 = time.time()
        r = http.patch(urls[i % len(urls)] + PATH, json={"weight": 100 + i % 2})
        t1 = time.time()
        return {"status": r.status_code, "commit_ms": (t1 - t0) * 1000,
                "op_id": r.json().get("op_id"), "url": urls[i % len(urls)]}

    start = time.time()
    futures = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(count):
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(write, i))
        results = [f.result() for f in futures]
    elapsed = time.time() - start
    programmed = []
    deadline = time.time() + 30
    for res in results:
        if res["status"] != 200:
            continue
        while True:
            op = http.get(res["url"] + f"/api/v1/operations/{res['op_id']}").json()
            if op["status"] == "programmed" or time.time() > deadline:
                break
            time.sleep(0.01)
        if op["status"] == "programmed":
            programmed.append((op["programmed_at"] - op["committed_at"]) * 1000)
    return {"rate": rate, "count": count, "elapsed_s": elapsed,
            "failed": sum(1 for r in results if r["status"] != 200),
            "commit_ms": [r["commit_ms"] for r in results if r["status"] == 200],
            "programmed_ms": programmed}


def failover(pid: int) -> dict[str, Any]:
    http, urls = client()
    http.timeout = httpx.Timeout(1.0)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    attempts = 0
    while time.time() - killed < 30:
        url = urls[attempts % len(urls)]
        attempts += 1
        try:
            r = http.patch(url + PATH, json={"weight": 100 + attempts % 2})
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            return {"failover_s": time.time() - killed, "attempts": attempts}
        time.sleep(0.01)
    return {"failover_s": None, "attempts": attempts}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, required=True)
    lat.add_argument("--count", type=int, required=True)
    fo = sub.add_parser("failover")
    fo.add_argument("--pid", type=int, required=True)
    args = ap.parse_args()
    out = latency(args.rate, args.count) if args.cmd == "latency" else failover(args.pid)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
