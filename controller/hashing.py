"""Models of OVS 3.1's hashes (pure): the datapath's hash of a packet, which a
`selection_method=dp_hash` group picks its bucket by (`datapath_hash`: what the Mux's slot
tables are read with, slot_table.py), and the `selection_method=hash` choice
(`selection_basis`, `best_bucket`), which bench/hashing.py can compare.

OVS's `selection_method=hash` group is highest-random-weight (rendezvous) hashing in
ovs-vswitchd: it hashes the packet's selected fields into a `basis`, scores every bucket with
`(hash_int(bucket_id, basis) & 0xffff) * weight` and takes the best (the last one on a tie).
Multiplying a uniform score by the weight is not proportional weighting (weights 1:2 give
about 25:75), and every new 5-tuple is an upcall: Ananta's Muxes no longer use it.

The functions below work on Python ints and, unchanged, on numpy uint64 arrays (bench/).
They follow OVS 3.1's lib/hash.h (the murmur-based variant that Debian's generic x86-64
build uses), ofproto-dpif-xlate.c's pick_hash_fields_select_group and dpif-netdev's hash
action.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MASK32 = 0xFFFFFFFF

# The fields OVS can hash for us, in the order OVS hashes them (its internal field ids), with
# their width in bytes.
FIELD_BYTES = {"ipv4_src": 4, "ipv4_dst": 4, "ip_proto": 1,
               "tcp_src": 2, "tcp_dst": 2, "udp_src": 2, "udp_dst": 2}


def _rot(x: Any, k: int) -> Any:
    return ((x << k) | (x >> (32 - k))) & MASK32


def hash_add(h: Any, data: Any) -> Any:
    data = (data * 0xCC9E2D51) & MASK32
    data = _rot(data, 15)
    data = (data * 0x1B873593) & MASK32
    h = _rot(h ^ data, 13)
    return (h * 5 + 0xE6546B64) & MASK32


def hash_finish(h: Any, final: int) -> Any:
    h = h ^ final
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def hash_uint64(x: int) -> int:
    return int(hash_finish(hash_add(hash_add(0, x & MASK32), x >> 32), 8))


def hash_int(x: Any, basis: Any) -> Any:
    """OVS hash_int(x, basis) = hash_2words(x, basis)."""
    return hash_finish(hash_add(hash_add(x, 0), basis), 8)


def _wire_word(value: Any, n_bytes: int) -> Any:
    """The uint32 OVS reads (little-endian) from the field's network-order bytes."""
    if n_bytes == 4:
        return (((value & 0xFF) << 24) | ((value & 0xFF00) << 8)
                | ((value >> 8) & 0xFF00) | ((value >> 24) & 0xFF))
    if n_bytes == 2:
        return ((value & 0xFF) << 8) | ((value >> 8) & 0xFF)
    return value


def selection_basis(values: Mapping[str, Any], fields: tuple[str, ...], param: int = 0) -> Any:
    """The basis OVS computes from a packet's `values` (field name -> int) for a group that
    hashes `fields`; each field is hashed on its own, like hash_bytes over its bytes."""
    unknown = set(fields) - FIELD_BYTES.keys()
    if unknown:
        raise ValueError(f"cannot model hashing of {sorted(unknown)}")
    basis: Any = hash_uint64(param)
    for name, n_bytes in FIELD_BYTES.items():
        if name in fields:
            basis = hash_finish(hash_add(basis, _wire_word(values[name], n_bytes)), n_bytes)
    return basis


@dataclass(frozen=True)
class BucketSpec:
    bucket_id: int
    weight: int


def best_bucket(buckets: tuple[BucketSpec, ...], basis: int) -> int | None:
    """The bucket_id OVS picks for `basis` (None when there are no buckets)."""
    best, best_score = None, 0
    for b in buckets:
        score = (hash_int(b.bucket_id, basis) & 0xFFFF) * b.weight
        if score >= best_score:
            best, best_score = b.bucket_id, score
    return best


def packet_values(src: str, dst: str, protocol: str, sport: int, dport: int) -> dict[str, int]:
    return {"ipv4_src": int(ipaddress.IPv4Address(src)),
            "ipv4_dst": int(ipaddress.IPv4Address(dst)),
            "ip_proto": {"tcp": 6, "udp": 17}[protocol],
            f"{protocol}_src": sport, f"{protocol}_dst": dport}


def datapath_hash(values: Mapping[str, Any], protocol: str) -> Any:
    """The dp_hash OVS 3.1's userspace datapath gives an IPv4 TCP/UDP packet with `values`
    (see packet_values), the hash a selection_method=dp_hash group picks by: hash_int(rss,
    0), where rss is miniflow_hash_5tuple(packet, 0), the hash dpif-netdev computed when the
    packet arrived. Checked against real packets and ofproto/trace in tests/ovs."""
    h = hash_add(0, _wire_word(values["ipv4_src"], 4))
    h = hash_add(h, _wire_word(values["ipv4_dst"], 4))
    h = hash_add(h, values["ip_proto"])
    ports = (_wire_word(values[f"{protocol}_src"], 2)
             | (_wire_word(values[f"{protocol}_dst"], 2) << 16))
    return hash_int(hash_finish(hash_add(h, ports), 42), 0)
