"""ExaBGP configuration and API commands (pure).

The Mux agent runs as ExaBGP's helper process: it writes `announce route ...` and
`withdraw route ...` lines on stdout and reads ExaBGP's `done`/`error` answers on stdin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BgpPeer:
    address: str
    peer_as: int


def announce(vip: str, prepend: int = 0, local_as: int = 0) -> str:
    """Announce a VIP; with `prepend`, its AS path carries that many extra copies of
    `local_as` (a less preferred route)."""
    route = f"announce route {ipaddress.IPv4Address(vip)}/32 next-hop self"
    return route + (f" as-path [ {' '.join([str(local_as)] * (prepend + 1))} ]"
                    if prepend else "")


def withdraw(vip: str) -> str:
    return f"withdraw route {ipaddress.IPv4Address(vip)}/32 next-hop self"


def route_changes(announced: Mapping[str, int], wanted: Mapping[str, int],
                  local_as: int = 0) -> list[str]:
    """The commands that take the speaker from `announced` to `wanted` (VIP -> AS-path
    prepend): withdrawals first, then new or changed announcements."""
    key = ipaddress.IPv4Address
    return ([withdraw(v) for v in sorted(announced.keys() - wanted.keys(), key=key)]
            + [announce(v, p, local_as) for v, p in sorted(wanted.items(), key=lambda i: key(i[0]))
               if announced.get(v) != p])


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
