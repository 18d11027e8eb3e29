"""The Mux agent's fragment port: read IP fragments br-int steers to it, write them back
placed (mux/fragments.py decides; this is the socket shell). Runs as a thread of ananta-mux.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import subprocess
import threading
import time

from ananta.bridges import FRAG_PORT
from ananta.mux.fragments import FragmentCounts, FragmentSteering
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.mux.fragments")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
REPORT_EVERY_S = 60.0


def _open() -> tuple[socket.socket, int]:
    """A raw socket on the fragment port (an OVS internal port, so a tap device here), and
    the port's interface index."""
    run(["sysctl", "-qw", f"net.ipv6.conf.{FRAG_PORT}.disable_ipv6=1"], timeout=3)
    run(["ip", "link", "set", FRAG_PORT, "up"], timeout=3)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((FRAG_PORT, 0))
    return sock, socket.if_nametoindex(FRAG_PORT)


def serve(stop: threading.Event, steering: FragmentSteering | None = None) -> None:
    """Until `stop`: steer fragments; reopen the port when OVS recreates it."""
    steering = steering or FragmentSteering()
    sock: socket.socket | None = None
    ifindex = 0
    reported = time.monotonic()
    last_counts: FragmentCounts | None = None
    while not stop.is_set():
        if sock is None:
            try:
                sock, ifindex = _open()
                LOG.info("fragment port %s open (ifindex %d)", FRAG_PORT, ifindex)
            except (OSError, CommandFailed, subprocess.TimeoutExpired) as exc:
                LOG.debug("fragment port not ready: %s", exc)
                stop.wait(1.0)
                continue
        try:
            ready, _, _ = select.select([sock], [], [], 0.5)
            now = time.monotonic()
            if ready:
                frame, address = sock.recvfrom(65535)
                if address[2] != PACKET_OUTGOING:  # not our own writes
                    for out in steering.on_frame(frame, now):
                        sock.send(out)
            steering.expire(now)
            if not ready and socket.if_nametoindex(FRAG_PORT) != ifindex:
                raise OSError(f"{FRAG_PORT} was made again")  # bound to a gone device
        except OSError as exc:  # the port went away (an OVS restart): open it again
            LOG.warning("fragment port %s: %s; reopening", FRAG_PORT, exc)
            sock.close()
            sock = None
            stop.wait(0.5)
            continue
        if now - reported >= REPORT_EVERY_S and steering.counts != last_counts:
            LOG.info("fragments: %s", steering.counts)
            reported, last_counts = now, dataclasses.replace(steering.counts)
    if sock is not None:
        sock.close()


def start(stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=serve, args=(stop,), name="fragments", daemon=True)
    thread.start()
    return thread
