"""One HTTP/1.1 keep-alive connection that waits in the middle (lab workload for tests).

Run in a client namespace: GET / once and print {"first": "<vm>"}; read a line on stdin;
then GET / `--more` times on the same connection and print {"then": [...], "errors": [...]}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys


def get(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/")
    body = conn.getresponse().read().decode()
    return body.split()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--more", type=int, default=5)
    args = ap.parse_args()
    conn = http.client.HTTPConnection(args.host, args.port, timeout=5)
    print(json.dumps({"first": get(conn)}), flush=True)
    sys.stdin.readline()
    then, errors = [], []
    for _ in range(args.more):
        try:
            then.append(get(conn))
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            break
    print(json.dumps({"then": then, "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
