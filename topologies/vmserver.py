"""The small HTTP server each lab VM runs: its reply names the VM (lab workload, not a daemon).

GET / -> "served-by <name> <address>\n"; GET /bytes/N -> N bytes (for throughput tests);
GET /stream/RATE -> 8-byte big-endian counters 0, 1, 2, ... at RATE bytes/s until the client
goes (for the fault harness, topologies/loadgen.py), with an X-Served-By header.
HTTP/1.1 with keep-alive, one thread per connection.
"""

from __future__ import annotations

import argparse
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = struct.Struct(">Q")


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body are two writes: without TCP_NODELAY a keep-alive request would
        # wait out the client's delayed ACK (40 ms) before the body leaves
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/stream/"):
                self.stream()
                return
            if self.path.startswith("/bytes/"):
                try:
                    size = min(int(self.path.split("/")[2]), 1 << 30)
                except ValueError:
                    self.send_error(400, "bad size")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"x" * 65536
                while size > 0:
                    self.wfile.write(chunk[: min(size, len(chunk))])
                    size -= len(chunk)
                return
            host = self.connection.getsockname()[0]
            body = f"served-by {name} {host}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def stream(self) -> None:
            try:
                rate = max(8, min(int(self.path.split("/")[2]), 1 << 27))
            except ValueError:
                self.send_error(400, "bad rate")
                return
            self.send_response(200)
            self.send_header("X-Served-By", name)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            per_tick = max(1, rate // 8 // 20)  # records every 50 ms
            start, sent = time.monotonic(), 0
            try:
                while True:
                    self.wfile.write(b"".join(RECORD.pack(sent + i) for i in range(per_tick)))
                    self.wfile.flush()
                    sent += per_tick
                    time.sleep(max(0.0, start + sent * 8 / rate - time.monotonic()))
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    ThreadingHTTPServer.address_family = socket.AF_INET
    server = ThreadingHTTPServer(("0.0.0.0", args.port), make_handler(args.name))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
