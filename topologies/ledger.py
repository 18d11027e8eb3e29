"""Committed-config ledger for fault scenarios (lab workload, run in a Manager's namespace).

`write`: create tenants `<prefix>-<n>` one after another through the admin API, trying every
replica in turn, each write with its own Operation-Id so a retry is applied at most once.
A write counts as committed when a replica answered 201 (or, on a retry, 409: it exists).
Until SIGTERM; then prints {"acked": [[name, t], ...], "attempts": N, "longest_gap_s": ...}.
`check`: print the ledger tenants the cluster holds now (a replica that has the leader's
view: `GET /tenants` on each replica, the largest answer). `clean`: delete them.
The admin token comes from ANANTA_TOKEN, the replica URLs from the arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import threading
import time
from typing import Any

import httpx


def call(http: httpx.Client, urls: list[str], method: str, path: str, body: Any = None,
         op_id: str | None = None) -> httpx.Response | None:
    """The first answer other than 503 from any replica, or None if none gave one."""
    headers = {"Operation-Id": op_id} if op_id else {}
    for url in urls:
        try:
            r = http.request(method, url + path, json=body, headers=headers)
        except httpx.HTTPError:
            continue
        if r.status_code != 503:
            return r
    return None


def write(http: httpx.Client, urls: list[str], prefix: str, interval: float,
          stop: threading.Event) -> dict[str, Any]:
    acked: list[tuple[str, float]] = []
    attempts, n = 0, 0
    while not stop.is_set():
        name, op_id, retry = f"{prefix}-{n}", secrets.token_hex(16), False
        body = {"name": name, "token": secrets.token_urlsafe(24)}
        while not stop.is_set():
            attempts += 1
            r = call(http, urls, "POST", "/api/v1/tenants", body, op_id)
            if r is not None and (r.status_code == 201 or (retry and r.status_code == 409)):
                acked.append((name, time.time()))
                break
            if r is not None and r.status_code not in (409, 500, 502, 504):
                raise SystemExit(f"ledger write {name}: HTTP {r.status_code} {r.text[:200]}")
            retry = True
            stop.wait(0.05)
        n += 1
        stop.wait(interval)
    times = [t for _, t in acked]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"acked": acked, "attempts": attempts,
            "longest_gap_s": round(max(gaps), 3) if gaps else None}


def present(http: httpx.Client, urls: list[str], prefix: str) -> list[str]:
    best: list[str] = []
    for url in urls:
        try:
            r = http.get(url + "/api/v1/tenants")
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            names = [t["name"] for t in r.json() if t["name"].startswith(prefix + "-")]
            best = names if len(names) > len(best) else best
    return sorted(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["write", "check", "clean"])
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args()
    http = httpx.Client(timeout=2.0,
                        headers={"Authorization": f"Bearer {os.environ['ANANTA_TOKEN']}"})
    if args.action == "write":
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(json.dumps({"started": time.time()}), flush=True)
        print(json.dumps(write(http, args.url, args.prefix, args.interval, stop)), flush=True)
    elif args.action == "check":
        print(json.dumps(present(http, args.url, args.prefix)))
    else:
        names = present(http, args.url, args.prefix)
        for name in names:
            call(http, args.url, "DELETE", f"/api/v1/tenants/{name}")
        print(json.dumps({"deleted": len(names)}))


if __name__ == "__main__":
    main()
