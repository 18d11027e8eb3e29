"""Send small UDP datagrams as fast as one core can for a while; print how many were sent.

    python bench/udp_blast.py --dst 203.0.113.10 --port 5000 --seconds 3 [--src A] [--flows N]

With --flows N the source port cycles over N values (N established flows); with --flows 0
every datagram has a new source port (every one a new connection).
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--src", default="")
    ap.add_argument("--flows", type=int, default=64)
    args = ap.parse_args()
    socks = []
    for i in range(args.flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((args.src, 1024 + i if args.flows else 0))
        socks.append(s)
    payload = b"x" * 18
    dst = (args.dst, args.port)
    sent, port = 0, 1024
    end = time.monotonic() + args.seconds
    if args.flows:
        while time.monotonic() < end:
            for s in socks:
                s.sendto(payload, dst)
            sent += len(socks)
    else:  # a new source port per datagram (tens of thousands per second: enough here)
        while time.monotonic() < end and port < 65535:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((args.src, port))
            s.sendto(payload, dst)
            s.close()
            port += 1
            sent += 1
    print(json.dumps({"sent": sent, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
