"""A small OpenFlow table interpreter for the unit tests (Faucet-style).

It runs the compiled `SwitchProgram`s on packets given as dicts: highest-priority match per
table, the actions the compilers use (output, set_field, group select, ct with DNAT and
reverse NAT, resubmit, learn), and a tiny conntrack. It is deliberately independent of
the compilers: tests ask "where does this packet go and how does it look there?".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ananta.controller.flows import (
    CT_EST,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    PORT_IN_PORT,
    PORT_NORMAL,
    Ct,
    Flow,
    FlowKind,
    Group,
    GroupAction,
    Learn,
    MeterAction,
    Move,
    Output,
    Resubmit,
    SetField,
    SwitchProgram,
    ip_int,
)
from ananta.controller.hashing import datapath_hash
from ananta.controller.slot_table import BINS

Packet = dict[str, Any]
NORMAL = "NORMAL"


def _matches(flow: Flow, pkt: Packet) -> bool:
    for name, want in flow.match:
        if name.startswith("reg") or name in ("tcp_flags", "ip_frag"):
            have = pkt.get(name, 0)  # registers start at 0; a packet without flags has 0
        elif isinstance(want, tuple) and name.startswith("eth_"):
            if name not in pkt:
                return False
            value, mask = (_mac_int(w) for w in want)
            if _mac_int(pkt[name]) & mask != value & mask:
                return False
            continue
        elif name not in pkt:
            return False
        else:
            have = pkt[name]
        if isinstance(want, tuple):
            value, mask = want
            if have & mask != value & mask:
                return False
        elif have != want:
            return False
    return True


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _l4(pkt: Packet) -> str:
    return "tcp" if pkt.get("ip_proto") == 6 else "udp"


def _tuple(pkt: Packet) -> tuple[Any, ...]:
    p = _l4(pkt)
    return (pkt["ipv4_src"], pkt["ipv4_dst"], pkt["ip_proto"], pkt[f"{p}_src"], pkt[f"{p}_dst"])


@dataclass
class Conntrack:
    # zone -> {original tuple: reply tuple}
    entries: dict[int, dict[tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=dict)
    marks: dict[tuple[int, tuple[Any, ...]], int] = field(default_factory=dict)

    def process(self, pkt: Packet, ct: Ct) -> None:
        zone_id = pkt.get(ct.zone_field, 0) if ct.zone_field else ct.zone
        zone = self.entries.setdefault(zone_id, {})
        pkt["ct_zone"] = zone_id
        t = _tuple(pkt)
        p = _l4(pkt)
        replies = {r: o for o, r in zone.items()}
        if t in zone:  # original direction of a known connection
            pkt["ct_state"] = CT_TRK | CT_EST
            if ct.commit and ct.mark is not None:  # a commit may change a connection's mark
                self.marks[(zone_id, t)] = ct.mark
            pkt["ct_mark"] = self.marks.get((zone_id, t), 0)
            reply = zone[t]
            if ct.nat is not None:
                pkt["ipv4_dst"], pkt[f"{p}_dst"] = reply[0], reply[3]
        elif t in replies:  # reply direction
            pkt["ct_state"] = CT_TRK | CT_EST | CT_RPL
            orig = replies[t]
            if ct.nat is not None:
                pkt["ipv4_src"], pkt[f"{p}_src"] = orig[1], orig[4]
        else:
            pkt["ct_state"] = CT_TRK | CT_NEW
            pkt["ct_mark"] = 0
            if ct.commit:
                if ct.mark is not None:
                    self.marks[(zone_id, t)] = pkt["ct_mark"] = ct.mark
                if ct.nat is not None and ct.nat.dst_address is not None:
                    pkt["ipv4_dst"] = ct.nat.dst_address
                    if ct.nat.dst_port is not None:
                        pkt[f"{p}_dst"] = ct.nat.dst_port
                src, dst, proto, sport, dport = t
                zone[t] = (pkt["ipv4_dst"], src, proto, pkt[f"{p}_dst"], sport)


@dataclass
class Switch:
    program: SwitchProgram
    conntrack: Conntrack = field(default_factory=Conntrack)
    learned: list[Flow] = field(default_factory=list)
    metered: dict[int, int] = field(default_factory=dict)  # meter_id -> packets through it

    def flows(self, table: int) -> list[Flow]:
        candidates = [f for f in (*self.program.flows, *self.learned) if f.table == table]
        return sorted(candidates, key=lambda f: -f.priority)

    def receive(self, pkt: Packet, in_port: int) -> list[tuple[Any, Packet]]:
        pkt = dict(pkt, in_port=in_port)
        out: list[tuple[Any, Packet]] = []
        self._table(0, pkt, out, depth=0)
        return out

    def _table(self, table: int, pkt: Packet, out: list[tuple[Any, Packet]], depth: int) -> None:
        assert depth < 16, "resubmit loop"
        for flow in self.flows(table):
            if _matches(flow, pkt):
                self._actions(flow.actions, pkt, out, depth)
                return  # table miss (no flow) drops

    def _group(self, group: Group, pkt: Packet) -> Any:
        """OVS's choice, from the pure model of the datapath's hash (checked against real
        packets and ofproto/trace): the hash, kept in the packet as `dp_hash` as the datapath
        does for the tables after the group, picks the bucket in list order."""
        if not group.buckets:
            return None
        assert len(group.buckets) == BINS, "Ananta's dp_hash groups have 256 buckets"
        protocol = _l4(pkt)
        values = {f: ip_int(pkt[f]) if isinstance(pkt[f], str) else pkt[f]
                  for f in ("ipv4_src", "ipv4_dst", "ip_proto", f"{protocol}_src",
                            f"{protocol}_dst")}
        pkt["dp_hash"] = datapath_hash(values, protocol)
        return group.buckets[pkt["dp_hash"] & 0xFF]

    def _actions(self, actions: tuple[Any, ...], pkt: Packet, out: list[tuple[Any, Packet]],
                 depth: int) -> None:
        for i, act in enumerate(actions):
            if isinstance(act, Output):
                port = act.port
                if port == PORT_NORMAL:
                    port = NORMAL
                elif port == PORT_IN_PORT:
                    port = pkt["in_port"]
                elif port == pkt["in_port"]:
                    continue  # OpenFlow: never out of the port it came in (use IN_PORT)
                out.append((port, dict(pkt)))
            elif isinstance(act, SetField):
                pkt[act.field] = act.value
            elif isinstance(act, GroupAction):
                group = next(g for g in self.program.groups if g.group_id == act.group_id)
                bucket = self._group(group, pkt)
                if bucket is not None:
                    self._actions(bucket.actions, dict(pkt), out, depth + 1)
            elif isinstance(act, Move):
                low = (1 << act.n_bits) - 1
                pkt[act.dst] = (pkt.get(act.dst, 0) & ~low) | (pkt[act.src] & low)
            elif isinstance(act, Resubmit):  # the same packet: what the table sets stays set
                self._table(act.table, pkt, out, depth + 1)
            elif isinstance(act, Ct):
                self.conntrack.process(pkt, act)
                if act.table is not None:
                    self._table(act.table, pkt, out, depth + 1)
                    return
            elif isinstance(act, MeterAction):
                self.metered[act.meter_id] = self.metered.get(act.meter_id, 0) + 1  # no drop
            elif isinstance(act, Learn):
                actions: list[Any] = [SetField(ld.dst, pkt[ld.src]) for ld in act.loads]
                actions += [SetField(name, value) for name, value, _ in act.load_values]
                if act.output_from:
                    actions.append(Output(pkt[act.output_from]))
                learned_match = tuple(sorted(
                    [(name, pkt[name]) for name, _ in act.match_fields]
                    + [(name, value) for name, value, _ in act.match_values]))
                flow = Flow(act.table, act.priority, learned_match, tuple(actions),
                            FlowKind.CONNECTION, "learned")
                self.learned = [f for f in self.learned if f.key != flow.key] + [flow]
            else:
                raise AssertionError(f"interpreter does not know {act!r} (action {i})")
