"""ExaBGP configuration and API commands (pure).

The Mux agent runs as ExaBGP's helper process: it writes `announce route ...` and
`withdraw route ...` lines on stdout and reads ExaBGP's `done`/`error` answers on stdin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BgpPeer:
    address: str
    peer_as: int


def announce(vip: str) -> str:
    return f"announce route {ipaddress.IPv4Address(vip)}/32 next-hop self"


def withdraw(vip: str) -> str:
    return f"withdraw route {ipaddress.IPv4Address(vip)}/32 next-hop self"


def route_changes(announced: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The commands that take the speaker from `announced` to `wanted` (withdrawals first)."""
    have, want = set(announced), set(wanted)
    key = ipaddress.IPv4Address
    return ([withdraw(v) for v in sorted(have - want, key=key)]
            + [announce(v) for v in sorted(want - have, key=key)])


def exabgp_config(
    router_id: str,
    local_address: str,
    local_as: int,
    peers: Sequence[BgpPeer],
    hold_time: int,
    process_argv: Sequence[str],
    md5_password: str | None = None,
) -> str:
    def quote(word: str) -> str:
        return word if all(c.isalnum() or c in "/._-=:" for c in word) else f"'{word}'"

    lines = []
    for peer in peers:
        lines += [
            f"neighbor {peer.address} {{",
            f"    router-id {router_id};",
            f"    local-address {local_address};",
            f"    local-as {local_as};",
            f"    peer-as {peer.peer_as};",
            f"    hold-time {hold_time};",
        ]
        if md5_password:
            lines.append(f"    md5-password '{md5_password}';")
        lines += [
            "    family { ipv4 unicast; }",
            "    api { processes [ announcer ]; }",
            "}",
            "",
        ]
    lines += [
        "process announcer {",
        f"    run {' '.join(quote(w) for w in process_argv)};",
        "    encoder text;",
        "}",
        "",
    ]
    return "\n".join(lines)


EXABGP_ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_daemon_daemonize": "false",
    "exabgp_api_cli": "false",
    "exabgp_log_destination": "stdout",
}
