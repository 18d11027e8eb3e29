"""OpenFlow flows and groups as frozen value objects (pure).

A switch's desired state is a `SwitchProgram`: a set of `Flow`s and `Group`s. Flows carry a
64-bit cookie that names their owner and fingerprints their content:

    0xA7 | kind (8 bits) | owner (16 bits, hash of the owner key) | digest (32 bits)

so a flow installed on a switch is "ours and up to date" exactly when its cookie is in the
desired set: reconciling a switch is a set difference over cookies, with no need to parse
matches back. Flows created by `learn()` carry the LEARNED tag and are left alone.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
import operator
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

COOKIE_TAG = 0xA7
LEARNED_TAG = 0xA8
COOKIE_TAG_SHIFT = 56
COOKIE_TAG_MASK = 0xFF << COOKIE_TAG_SHIFT

# Reserved OpenFlow ports (same numbers as the OpenFlow 1.3+ specification).
PORT_IN_PORT = 0xFFFFFFF8
PORT_NORMAL = 0xFFFFFFFA
PORT_LOCAL = 0xFFFFFFFE
PORT_CONTROLLER = 0xFFFFFFFD

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
IP_PROTO = {"tcp": 6, "udp": 17}

# ip_frag (OVS's nw_frag) as (value, mask): any fragment, the first one, a later one.
FRAG_ANY, FRAG_LATER = 0x1, 0x2
IP_FRAG_YES = (FRAG_ANY, FRAG_ANY)
IP_FRAG_FIRST = (FRAG_ANY, FRAG_ANY | FRAG_LATER)
IP_FRAG_LATER = (FRAG_LATER, FRAG_LATER)

# Conntrack state bits as OVS defines them for ct_state.
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


class FlowKind(enum.IntEnum):
    DEFAULT = 1  # table-miss and fixed plumbing
    VIP_STEER = 2  # mux br-phy: VIP traffic into the LB pipeline
    VIP_ENDPOINT = 3  # mux br-int: endpoint -> select group
    VIP_NO_ENDPOINT = 4  # mux br-int: VIP but no such endpoint -> drop (counted)
    DECAP_DNAT = 5  # host br-int: from tunnel, DNAT to the DIP, deliver to the VM
    REPLY = 6  # host br-int: from the VM, reverse NAT, DSR to the router
    ARP = 7  # host br-int: answer the VM's ARP for its gateway
    ROUTER_MAC = 8  # host br-phy: learn the router's MAC, send DSR replies to it
    PROBE = 9  # host br-int: the host agent's health probes to its VMs, and their replies
    CONNECTION = 10  # mux br-int: a tracked connection to its DIP (by ct_mark), and commits
    SNAT = 11  # host br-int: a DIP's outbound connections leave as VIP:port of its blocks
    SNAT_RETURN = 12  # mux br-int: return traffic to a SNAT block goes to the DIP's host
    FRAGMENT = 13  # IP fragments: through the Mux agent (mux); NAT via reassembly (host)
    SPLIT_BIN = 14  # mux br-int: the runs of a split bin of an endpoint's slot table


Match = tuple[tuple[str, Any], ...]


def match(**fields: Any) -> Match:
    """A canonical (sorted) match; values are ints, dotted IPs, MACs or (value, mask) pairs.
    Its (field, value) pairs are shared between matches: a Mux holds ~50 flows per VIP."""
    return tuple(sorted(map(_shared, fields.items())))


@functools.lru_cache(maxsize=1 << 18)
def _shared(pair: tuple[str, Any]) -> tuple[str, Any]:
    return pair


@dataclass(frozen=True, slots=True)
class Output:
    port: int


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True, slots=True)
class Nat:
    """Conntrack NAT: DNAT to dst_address:dst_port, or SNAT to src_address with a port in
    src_ports (min, max); with neither, applies the connection's existing binding."""

    dst_address: str | None = None
    dst_port: int | None = None
    src_address: str | None = None
    src_ports: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Ct:
    """Send the packet through conntrack in `zone` (or, with `zone_field`, the zone that
    field holds: "ct_zone" is the one the packet was last tracked in); `commit` stores the
    connection, with `mark` (32 bits) as its ct_mark when given."""

    zone: int = 0
    commit: bool = False
    table: int | None = None  # recirculate to this table after conntrack
    nat: Nat | None = None
    zone_field: str | None = None
    mark: int | None = None


@dataclass(frozen=True, slots=True)
class Resubmit:
    table: int


@dataclass(frozen=True, slots=True)
class Move:
    """Copy the low `n_bits` of field `src` into the low bits of `dst` (OpenFlow 1.5
    copy_field)."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True, slots=True)
class LearnLoad:
    """In a learned flow: load the value `src` has now into `dst` when it runs."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True, slots=True)
class Learn:
    """Add (or refresh) a flow in `table` matching `match_values` (name, value, bits; OVS wants
    prerequisites such as eth_type and ip_proto as immediate values) and the current values
    of `match_fields` (name, bits), whose actions are the loads, then output to the port in
    `output_from`."""

    table: int
    priority: int
    cookie: int
    loads: tuple[LearnLoad, ...]
    output_from: str | None = None
    idle_timeout: int = 0
    match_fields: tuple[tuple[str, int], ...] = ()
    fin_idle_timeout: int = 0
    match_values: tuple[tuple[str, int, int], ...] = ()
    load_values: tuple[tuple[str, int, int], ...] = ()  # (dst, value, bits): immediate loads


@dataclass(frozen=True, slots=True)
class MeterAction:
    """Send the packet through meter `meter_id` (which may drop it)."""

    meter_id: int


Action = Output | SetField | GroupAction | Ct | Resubmit | Move | Learn | MeterAction


def learned_cookie(kind: FlowKind, tag: int = 0) -> int:
    """The cookie learn() gives its flows (`tag`: 32 bits of the learner's choosing)."""
    return (LEARNED_TAG << COOKIE_TAG_SHIFT) | (int(kind) << 48) | (tag & 0xFFFFFFFF)


def _digest(text: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big")


@dataclass(frozen=True, slots=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    kind: FlowKind
    owner: str = ""
    idle_timeout: int = 0
    hard_timeout: int = 0
    cookie: int = field(init=False, compare=False, repr=False)
    key_hash: int = field(init=False, compare=False, repr=False)  # hash(self.key), made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_hash", hash(self.key))
        content = repr((self.table, self.priority, self.match, self.actions,
                        self.idle_timeout, self.hard_timeout))
        cookie = (
            (COOKIE_TAG << COOKIE_TAG_SHIFT)
            | (int(self.kind) << 48)
            | (_digest(self.owner, 2) << 32)
            | _digest(content, 4)
        )
        object.__setattr__(self, "cookie", cookie)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Flow, (self.table, self.priority, self.match, self.actions, self.kind,
                       self.owner, self.idle_timeout, self.hard_timeout))  # key_hash: per process

    def __hash__(self) -> int:
        # the cookie digests every compared field but kind and owner, which it also holds:
        # equal flows have equal cookies (and hashing the nested match and actions each time
        # a program's flow sets are built or compared was a good part of compiling)
        return self.cookie

    @property
    def key(self) -> tuple[int, int, Match]:
        """What OpenFlow treats as the flow's identity: two flows with one key cannot coexist."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True, slots=True)
class Bucket:
    bucket_id: int
    weight: int
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """A select group with `selection_method=dp_hash` (OpenFlow 1.5): the datapath hashes
    the packet and the group takes bucket `dp_hash & 0xff`, in the order listed
    (slot_table.py)."""

    group_id: int
    buckets: tuple[Bucket, ...]
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # hashed once: a group of 256 buckets is a set member and a cache key of its
        # encoding on every config write
        object.__setattr__(self, "_hash", hash((self.group_id, self.buckets)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Group], tuple[int, tuple[Bucket, ...]]]:
        return (Group, (self.group_id, self.buckets))  # (str hashes differ between processes)


@dataclass(frozen=True, slots=True)
class Meter:
    """An OpenFlow meter in packets per second: above `rate_pps` (after a burst of `burst`
    packets) it drops."""

    meter_id: int
    rate_pps: int
    burst: int


@dataclass(frozen=True)  # (not slots: `cookies` is cached in the instance)
class SwitchProgram:
    flows: frozenset[Flow] = frozenset()
    groups: frozenset[Group] = frozenset()
    meters: frozenset[Meter] = frozenset()
    # The flows in the parts the compiler built them from (a VIP's, a DIP's...; key -> its
    # flows), set by `of_parts` only. A config write leaves most parts the very same objects,
    # which lets reconcile.plan_change look at the changed ones alone.
    parts: Mapping[Hashable, frozenset[Flow]] | None = field(
        default=None, compare=False, hash=False, repr=False)

    @classmethod
    def of_parts(cls, parts: Mapping[Hashable, frozenset[Flow]],
                 groups: frozenset[Group] = frozenset(),
                 meters: frozenset[Meter] = frozenset()) -> SwitchProgram:
        return cls(frozenset().union(*parts.values()), groups, meters, parts)

    def __post_init__(self) -> None:
        # each flow's key is hashed once, when it is made, and a part's set of them once,
        # when first seen: a Mux's program has ~50 flows per VIP
        keys = (set(map(_KEY_HASH, self.flows)) if self.parts is None
                else frozenset().union(*map(part_keys, self.parts.values())))
        if len(keys) != len(self.flows):
            seen: dict[tuple[int, int, Match], Flow] = {}
            for flow in self.flows:
                if flow.key in seen:
                    raise ValueError(
                        f"two flows share table/priority/match: {flow} and {seen[flow.key]}")
                seen[flow.key] = flow
        ids = [g.group_id for g in self.groups]
        if len(ids) != len(set(ids)):
            raise ValueError("two groups share a group id")
        meter_ids = [m.meter_id for m in self.meters]
        if len(meter_ids) != len(set(meter_ids)):
            raise ValueError("two meters share a meter id")

    @functools.cached_property
    def cookies(self) -> frozenset[int]:
        return frozenset(map(_COOKIE, self.flows))


@functools.lru_cache(maxsize=1 << 16)
def part_keys(part: frozenset[Flow]) -> frozenset[int]:
    """The hashes of a part's flows' keys (cached: a part is mostly seen again)."""
    return frozenset(map(_KEY_HASH, part))


_KEY_HASH = operator.attrgetter("key_hash")
_COOKIE = operator.attrgetter("cookie")


def kind_cookie(kind: FlowKind) -> int:
    """The cookie bits every one of our flows of `kind` has (mask 0xffff << 48)."""
    return (COOKIE_TAG << COOKIE_TAG_SHIFT) | (int(kind) << 48)


def is_ours(cookie: int) -> bool:
    return cookie >> COOKIE_TAG_SHIFT == COOKIE_TAG


def is_learned(cookie: int) -> bool:
    return cookie >> COOKIE_TAG_SHIFT == LEARNED_TAG


# The leader's lease on a Mux: a never-matching flow on br-phy table 0 (IEEE local
# experimental ethertype) that the leader re-adds every second (app.LEASE_REFRESH) while the
# Mux is in step with the replicated config. Its cookie carries the generation the Mux holds
# and whether it is draining; its age (`duration`, reset by every re-add) tells the Mux's BGP
# speaker the leader is there. Reconciliation leaves it alone.
LEASE_TAG = 0xA9
LEASE_TABLE, LEASE_PRIORITY, LEASE_ETH_TYPE = 0, 1, 0x88B5
LEASE_DRAINING_BIT = 1 << 32


def lease_cookie(generation: int, draining: bool) -> int:
    return ((LEASE_TAG << COOKIE_TAG_SHIFT) | (LEASE_DRAINING_BIT if draining else 0)
            | (generation & 0xFFFFFFFF))


def parse_lease_cookie(cookie: int) -> tuple[int, bool] | None:
    """(generation, draining) of a lease cookie, None for any other cookie."""
    if cookie >> COOKIE_TAG_SHIFT != LEASE_TAG:
        return None
    return cookie & 0xFFFFFFFF, bool(cookie & LEASE_DRAINING_BIT)


def is_lease(cookie: int) -> bool:
    return cookie >> COOKIE_TAG_SHIFT == LEASE_TAG


@functools.lru_cache(maxsize=65536)
def ip_int(address: str) -> int:
    """(Cached: the compilers ask it for the same few addresses on every config change.)"""
    return int(ipaddress.IPv4Address(address))


@functools.lru_cache(maxsize=1 << 17)
def stable_id(key: str, limit: int = 0xFFFFFF00) -> int:
    """A small stable id (group id, bucket id) from a key; the same on every Manager replica."""
    return 1 + _digest(key, 4) % (limit - 1)
