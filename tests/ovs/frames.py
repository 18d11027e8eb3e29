"""Send hand-made TCP segments out of an interface (AF_PACKET), for the ovs tier: the packets
of one 5-tuple with the TCP flags asked for, 20 ms apart (so conntrack has committed the
first before it sees the next).

    python -m tests.ovs.frames IFACE SRC DST SPORT DPORT FLAGS[,FLAGS...] [COUNT]

With COUNT, that many 5-tuples are sent, source ports SPORT, SPORT+1, ..., 1 ms apart (a
flood, paced so that the switch's receive queue keeps up).
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    segment = struct.pack("!HHIIBBHHH", sport, dport, 1000, 1 if flags & 0x10 else 0, 5 << 4,
                          flags, 65535, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(segment))
    segment = segment[:16] + struct.pack("!H", _checksum(pseudo + segment)) + segment[18:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), sport, 0, 64, 6, 0,
                         saddr, daddr)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return bytes.fromhex("ffffffffffff" "020000000001" "0800") + header + segment


def main(argv: list[str]) -> int:
    iface, src, dst, sport, dport, flags = argv[:6]
    count = int(argv[6]) if len(argv) > 6 else 0
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    if count:
        for port in range(int(sport), int(sport) + count):
            sock.send(tcp_frame(src, dst, port, int(dport), int(flags, 0)))
            time.sleep(0.001)
        return 0
    for flag in flags.split(","):
        sock.send(tcp_frame(src, dst, int(sport), int(dport), int(flag, 0)))
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
