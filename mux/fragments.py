"""Fragment steering: the Mux agent's half of sending every IP fragment of a datagram to the
DIP an unfragmented packet of its 5-tuple goes to (pure; the socket is in mux/fragport.py).

OVS cannot place a later fragment: it carries no ports, so it hashes apart from its first
fragment, and conntrack sees it only once its datagram is complete. br-int therefore sends
every fragment to a VIP out of the fragment port (eth_dst STEERED_MAC), and this agent:
  - sends a first fragment straight back: br-int places it by the hash of its 5-tuple (as
    Maglev does fragments) and it leaves for its DIP, and br-int echoes it here with
    that DIP in its eth_dst (02:a8 + the DIP's address; eth_src 02:a8:0:0:0:0;
    controller/compile_mux.py);
  - holds the datagram's later fragments until that echo, then sends them back with those
    MACs, which the DIP's br-int flow tunnels to it.
A datagram is known by (source, destination, protocol, IP id) for HOLD_S after its last
fragment; fragments still held then (the first never came, or was dropped) are dropped.
Bounded: at most MAX_DATAGRAMS datagrams and MAX_HELD fragments each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STEERED_MAC = bytes.fromhex("02a700000000")
ROUTE_PREFIX = bytes.fromhex("02a8")
ETH_TYPE_IP = b"\x08\x00"
HOLD_S = 2.0
MAX_DATAGRAMS = 4096
MAX_HELD = 64  # a 64 KB datagram is 45 fragments of 1,480 bytes

Key = tuple[bytes, bytes, int, int]  # source, destination, protocol, IP id


@dataclass
class Datagram:
    expires: float
    route: tuple[bytes, bytes] | None = None  # (eth_dst, eth_src) from the echo
    held: list[bytes] = field(default_factory=list)


@dataclass
class FragmentCounts:
    first: int = 0  # first fragments sent back to be placed
    later: int = 0  # later fragments sent back with their datagram's tunnel fields
    held: int = 0  # later fragments that had to wait for their first
    dropped: int = 0  # held fragments whose first never came back, or over a bound
    ignored: int = 0  # frames that are not a steered fragment or an echo


def _parse(frame: bytes) -> tuple[Key, int] | None:
    """(key, fragment offset) of an IPv4 fragment in an Ethernet frame; None otherwise."""
    if len(frame) < 34 or frame[12:14] != ETH_TYPE_IP or frame[14] >> 4 != 4:
        return None
    flags_offset = int.from_bytes(frame[20:22], "big")
    more, offset = flags_offset & 0x2000, flags_offset & 0x1FFF
    if not more and not offset:
        return None  # not a fragment
    key = (frame[26:30], frame[30:34], frame[23], int.from_bytes(frame[18:20], "big"))
    return key, offset


def _with_route(frame: bytes, route: tuple[bytes, bytes]) -> bytes:
    return route[0] + route[1] + frame[12:]


class FragmentSteering:
    def __init__(self, hold_s: float = HOLD_S, max_datagrams: int = MAX_DATAGRAMS,
                 max_held: int = MAX_HELD) -> None:
        self.hold_s, self.max_datagrams, self.max_held = hold_s, max_datagrams, max_held
        self.datagrams: dict[Key, Datagram] = {}
        self.counts = FragmentCounts()

    def on_frame(self, frame: bytes, now: float) -> list[bytes]:
        """A frame read from the fragment port -> the frames to write back to it."""
        parsed = _parse(frame)
        if parsed is None:
            self.counts.ignored += 1
            return []
        key, offset = parsed
        if frame[:6] == STEERED_MAC:
            return self._steered(frame, key, offset, now)
        if frame[:2] == ROUTE_PREFIX and frame[6:8] == ROUTE_PREFIX and offset == 0:
            return self._echo(frame, key, now)
        self.counts.ignored += 1
        return []

    def _datagram(self, key: Key, now: float) -> Datagram | None:
        dg = self.datagrams.get(key)
        if dg is None:
            if len(self.datagrams) >= self.max_datagrams:
                self.expire(now)
                if len(self.datagrams) >= self.max_datagrams:
                    return None
            dg = self.datagrams[key] = Datagram(now + self.hold_s)
        dg.expires = now + self.hold_s
        return dg

    def _steered(self, frame: bytes, key: Key, offset: int, now: float) -> list[bytes]:
        dg = self._datagram(key, now)
        if offset == 0:
            self.counts.first += 1
            return [frame]  # placed by br-int, whatever this agent holds
        if dg is None:
            self.counts.dropped += 1
            return []
        if dg.route is not None:
            self.counts.later += 1
            return [_with_route(frame, dg.route)]
        if len(dg.held) >= self.max_held:
            self.counts.dropped += 1
            return []
        self.counts.held += 1
        dg.held.append(frame)
        return []

    def _echo(self, frame: bytes, key: Key, now: float) -> list[bytes]:
        dg = self._datagram(key, now)
        if dg is None:
            self.counts.dropped += 1
            return []
        dg.route = (frame[:6], frame[6:12])
        out = [_with_route(f, dg.route) for f in dg.held]
        self.counts.later += len(out)
        dg.held = []
        return out

    def expire(self, now: float) -> int:
        """Forget datagrams not seen for hold_s; returns how many held fragments it dropped."""
        gone = [k for k, dg in self.datagrams.items() if dg.expires <= now]
        dropped = 0
        for k in gone:
            dropped += len(self.datagrams.pop(k).held)
        self.counts.dropped += dropped
        return dropped
