"""Send small UDP datagrams for a while, as fast as one core can or at a paced rate; print how
many were sent.

    python bench/udp_blast.py --dst 203.0.113.10 --port 5000 --seconds 3 [--src A[,B...]]
                              [--flows N] [--pps R]

With --flows N the source port cycles over N values (N established flows). With --flows 0
every datagram has a new source port (every one a new connection): ports 1024-65535 of the
first source address, then of the next; it stops early when they are all used ("exhausted"),
so give enough addresses for the rate and time. --pps paces the sending (0: no pacing).
"""

from __future__ import annotations

import argparse
import json
import socket
import time

BATCH = 32  # datagrams between two pacing checks


def new_connections(sources: list[str], dst: tuple[str, int], seconds: float,
                    pps: float) -> tuple[int, bool]:
    payload = b"x" * 18
    start = time.monotonic()
    end = start + seconds
    sent = 0
    for src in sources:
        for port in range(1024, 65536):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, port))
            s.sendto(payload, dst)
            s.close()
            sent += 1
            if sent % BATCH == 0:
                now = time.monotonic()
                if now >= end:
                    return sent, False
                if pps and (ahead := start + sent / pps - now) > 0:
                    time.sleep(ahead)
    return sent, True


def established(src: str, flows: int, dst: tuple[str, int], seconds: float,
                pps: float) -> int:
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 1024 + i))
        socks.append(s)
    payload = b"x" * 18
    start = time.monotonic()
    end = start + seconds
    sent = 0
    while (now := time.monotonic()) < end:
        for s in socks:
            s.sendto(payload, dst)
        sent += len(socks)
        if pps and (ahead := start + sent / pps - now) > 0:
            time.sleep(ahead)
    return sent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--src", default="", help="source address(es), comma-separated")
    ap.add_argument("--flows", type=int, default=64)
    ap.add_argument("--pps", type=float, default=0.0)
    args = ap.parse_args()
    dst = (args.dst, args.port)
    sources = args.src.split(",")
    started = time.monotonic()
    if args.flows:
        sent, exhausted = established(sources[0], args.flows, dst, args.seconds, args.pps), False
    else:
        sent, exhausted = new_connections(sources, dst, args.seconds, args.pps)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - started, 3),
                      "exhausted": exhausted}))


if __name__ == "__main__":
    main()
