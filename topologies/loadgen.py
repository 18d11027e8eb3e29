"""Load generator and checker for fault scenarios (lab workload, run in a client namespace).

Three kinds of traffic to one VIP, all at once, every failure timestamped (wall clock, so the
orchestrator outside the namespace can line it up with the faults it injects):

- `--keepalive K` HTTP/1.1 connections, each sending GET / every `--interval` s; the answer
  must name the same VM every time (a connection never moves between backends);
- `--streams S` long TCP transfers (GET /stream from the VM server: 8-byte big-endian
  counters at `--stream-rate` bytes/s), checked for order and gaps;
- new connections at `--rate` per second, each one GET / with `Connection: close`.

Failure kinds: "reset" (RST or EOF mid-answer), "timeout" (no byte for `--timeout` s, 30),
"refused" (RST to the SYN), "wrong" (an answer from another VM, or a stream out of order),
"error" (anything else). A long-lived connection that fails is reported once, then replaced
by a new one so the load goes on. A pause of more than `--stall` s in a stream or between a
keep-alive request and its answer is a "stall": not a failure, but part of the disruption.

Runs until SIGTERM/SIGINT or `--duration`, then prints one JSON document (see `report()`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

STREAM_RECORD = struct.Struct(">Q")


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.new: list[tuple[float, float | None, str]] = []  # (start, latency_ms|None, vm)
        self.long_lived: list[dict[str, Any]] = []

    def failure(self, what: str, ident: str, kind: str, detail: str, vm: str = "") -> None:
        with self.lock:
            self.failures.append({"t": time.time(), "what": what, "id": ident, "kind": kind,
                                  "vm": vm, "detail": detail[:200]})

    def stall(self, what: str, ident: str, start: float, seconds: float, vm: str) -> None:
        with self.lock:
            self.stalls.append({"t": start, "what": what, "id": ident,
                                "seconds": round(seconds, 3), "vm": vm})


def classify(exc: BaseException) -> str:
    if isinstance(exc, ValueError):  # an answer from another VM, a stream out of order
        return "wrong"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected
                  | http.client.IncompleteRead | EOFError):
        return "reset"
    return "error"


def served_by(body: bytes) -> str:
    words = body.decode(errors="replace").split()
    if len(words) < 2 or words[0] != "served-by":
        raise ValueError(f"not an answer from a VM: {body[:60]!r}")
    return words[1]


Session = Callable[[dict[str, Any], threading.Event, argparse.Namespace, Recorder], None]


def long_lived(rec: Recorder, stop: threading.Event, args: argparse.Namespace, kind: str,
               slot: int, session: Session) -> None:
    """One slot of long-lived connections: `session` runs a connection until it fails or the
    load stops; a failed one is recorded once and replaced, so the load goes on."""
    generation = 0
    while not stop.is_set():
        info: dict[str, Any] = {"id": f"{kind}{slot}.{generation}", "kind": kind,
                                "opened": time.time(), "vm": "", "failed": None}
        generation += 1
        with rec.lock:
            rec.long_lived.append(info)
        try:
            session(info, stop, args, rec)
        except Exception as exc:  # noqa: BLE001 - every failure is data
            if not stop.is_set():
                info["failed"] = classify(exc)
                rec.failure(kind, info["id"], info["failed"], f"{type(exc).__name__}: {exc}",
                            info["vm"])
                stop.wait(0.2)
        finally:
            info["closed"] = time.time()


def keepalive_session(info: dict[str, Any], stop: threading.Event, args: argparse.Namespace,
                      rec: Recorder) -> None:
    info["requests"] = 0
    conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    try:
        while not stop.is_set():
            t0 = time.time()
            conn.request("GET", "/")
            vm = served_by(conn.getresponse().read())
            took = time.time() - t0
            if took > args.stall:
                rec.stall("keepalive", info["id"], t0, took, vm)
            if not info["vm"]:
                info["vm"] = vm
            elif vm != info["vm"]:
                raise ValueError(f"answered by {vm}, the connection began on {info['vm']}")
            info["requests"] += 1
            stop.wait(args.interval)
    finally:
        conn.close()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the server closed the stream")
        data += chunk
    return data


def stream_session(info: dict[str, Any], stop: threading.Event, args: argparse.Namespace,
                   rec: Recorder) -> None:
    info["bytes"] = 0
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
        sock.sendall(f"GET /stream/{args.stream_rate} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += _recv_exact(sock, 1)
        for line in head.decode(errors="replace").split("\r\n"):
            if line.lower().startswith("x-served-by:"):
                info["vm"] = line.split(":", 1)[1].strip()
        expected, last = 0, time.time()
        while not stop.is_set():
            (value,) = STREAM_RECORD.unpack(_recv_exact(sock, STREAM_RECORD.size))
            now = time.time()
            if now - last > args.stall:
                rec.stall("stream", info["id"], last, now - last, info["vm"])
            last = now
            if value != expected:
                raise ValueError(f"record {value} where {expected} was due")
            expected += 1
            info["bytes"] += STREAM_RECORD.size


def new_connection(rec: Recorder, args: argparse.Namespace, ident: str) -> None:
    t0 = time.time()
    conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        vm = served_by(conn.getresponse().read())
        with rec.lock:
            rec.new.append((t0, round((time.time() - t0) * 1000, 2), vm))
    except Exception as exc:  # noqa: BLE001
        kind = classify(exc)
        with rec.lock:
            rec.new.append((t0, None, kind))
        rec.failure("new", ident, kind, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def new_connections(rec: Recorder, stop: threading.Event, args: argparse.Namespace) -> None:
    period, n = 1.0 / args.rate, 0
    start = time.monotonic()
    while not stop.is_set():
        threading.Thread(target=new_connection, args=(rec, args, f"new{n}"), daemon=True).start()
        n += 1
        stop.wait(max(0.0, start + n * period - time.monotonic()))


def report(rec: Recorder, args: argparse.Namespace, started: float) -> dict[str, Any]:
    with rec.lock:
        return {"vip": args.host, "port": args.port, "started": started, "ended": time.time(),
                "settings": {"keepalive": args.keepalive, "streams": args.streams,
                             "rate": args.rate, "timeout": args.timeout, "stall": args.stall},
                "failures": sorted(rec.failures, key=lambda f: f["t"]),
                "stalls": sorted(rec.stalls, key=lambda s: s["t"]),
                "new": sorted(rec.new), "long_lived": rec.long_lived}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--keepalive", type=int, default=12)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--stream-rate", type=int, default=131072)
    ap.add_argument("--rate", type=float, default=20.0, help="new connections per second")
    # a long-lived connection waits as long as a patient client would: TCP retransmits with
    # backoff (a path back after 6.3 s is next tried at 12.7 s); shorter pauses are stalls
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--stall", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=0, help="seconds; 0: until SIGTERM")
    args = ap.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rec = Recorder()
    started = time.time()
    workers = [threading.Thread(target=long_lived, daemon=True,
                                args=(rec, stop, args, kind, i, session))
               for kind, count, session in (("keepalive", args.keepalive, keepalive_session),
                                            ("stream", args.streams, stream_session))
               for i in range(count)]
    if args.rate > 0:
        workers.append(threading.Thread(target=new_connections, args=(rec, stop, args),
                                        daemon=True))
    for w in workers:
        w.start()
    print(json.dumps({"started": started}), flush=True)
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    while not stop.wait(0.2) and time.monotonic() < deadline:
        pass
    stop.set()
    time.sleep(min(args.timeout, 1.0))  # let answers in flight land
    print(json.dumps(report(rec, args, started)), flush=True)


if __name__ == "__main__":
    main()
