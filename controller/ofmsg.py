"""Turn flow and group value objects into os-ken OpenFlow 1.5 messages.

This is the only module that knows os-ken's message classes. It imports os-ken's protocol
parsers (pure encoders), never its controller.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from ananta.controller.flows import (
    LEASE_ETH_TYPE,
    LEASE_PRIORITY,
    LEASE_TABLE,
    Action,
    Bucket,
    Ct,
    Flow,
    Group,
    GroupAction,
    Learn,
    Meter,
    MeterAction,
    Move,
    Output,
    Resubmit,
    SetField,
    lease_cookie,
)

NX_NAT_F_SRC = 1 << 0
NX_NAT_F_DST = 1 << 1
# OVS's group property choosing the select method (struct ntr_group_prop_selection_method):
# type, length, experimenter, exp_type, pad, method[16], param, then each hashed field as
# an OXM header followed by an all-ones value (which is how OVS itself encodes `fields(...)`).
NTR_VENDOR_ID = 0x0000154D
NTRT_SELECTION_METHOD = 1
OXM_FIELDS = {  # name -> (OpenFlow basic field number, value bytes)
    "ip_proto": (10, 1),
    "ipv4_src": (11, 4),
    "ipv4_dst": (12, 4),
    "tcp_src": (13, 2),
    "tcp_dst": (14, 2),
    "udp_src": (15, 2),
    "udp_dst": (16, 2),
}


class SelectionMethodProperty:
    """The NTR selection-method group property, serialised the way OVS parses it."""

    def __init__(self, method: str, fields: tuple[str, ...]):
        self.method, self.fields = method, fields

    def serialize(self) -> bytearray:
        body = bytearray()
        for name in self.fields:
            number, size = OXM_FIELDS[name]
            body += struct.pack("!I", 0x8000 << 16 | number << 9 | size) + b"\xff" * size
        length = 40 + len(body)
        out = bytearray(struct.pack("!HHIII16sQ", ofp.OFPGPT_EXPERIMENTER, length,
                                    NTR_VENDOR_ID, NTRT_SELECTION_METHOD, 0,
                                    self.method.encode(), 0))
        out += body
        out += b"\0" * (-len(out) % 8)
        return out


class _NxmHeader(parser.OFPOxmId):
    """A field's 4-byte NXM header as given (os-ken names no NXM_NX_DP_HASH)."""

    def __init__(self, header: int):
        self.header, self.hasmask = header, False

    def serialize(self) -> bytes:
        return struct.pack("!I", self.header)


def _nxm_header(name: str) -> int:
    """NXM_NX_DP_HASH and NXM_NX_REG0..15: class 0x0001, fields 35 and 0..15, 4 bytes."""
    field = 35 if name == "dp_hash" else int(name.removeprefix("reg"))
    return 0x0001 << 16 | field << 9 | 4


def _action(action: Action) -> list[Any]:
    if isinstance(action, Move):
        return [parser.OFPActionCopyField(
            n_bits=action.n_bits, src_offset=0, dst_offset=0,
            oxm_ids=[_NxmHeader(_nxm_header(action.src)), _NxmHeader(_nxm_header(action.dst))])]
    if isinstance(action, Output):
        return [parser.OFPActionOutput(action.port, ofp.OFPCML_NO_BUFFER)]
    if isinstance(action, SetField):
        # OVS refuses set_field on OXM in_port (OFPBAC_BAD_SET_ARGUMENT); its NXM form works
        name = "in_port_nxm" if action.field == "in_port" else action.field
        return [parser.OFPActionSetField(**{name: action.value})]
    if isinstance(action, GroupAction):
        return [parser.OFPActionGroup(action.group_id)]
    if isinstance(action, MeterAction):
        return [parser.OFPActionMeter(action.meter_id)]
    if isinstance(action, Resubmit):
        # NXAST_RESUBMIT_TABLE carries a 16-bit port: 0xfff8 is OpenFlow 1.0's IN_PORT.
        return [parser.NXActionResubmitTable(in_port=0xFFF8, table_id=action.table)]
    if isinstance(action, Ct):
        exec_actions = []
        if action.nat is not None:
            nat = action.nat
            if nat.dst_address is not None:
                exec_actions.append(parser.NXActionNAT(
                    flags=NX_NAT_F_DST,
                    range_ipv4_min=nat.dst_address, range_ipv4_max=nat.dst_address,
                    range_proto_min=nat.dst_port, range_proto_max=nat.dst_port))
            elif nat.src_address is not None:
                low, high = nat.src_ports or (None, None)
                exec_actions.append(parser.NXActionNAT(
                    flags=NX_NAT_F_SRC,
                    range_ipv4_min=nat.src_address, range_ipv4_max=nat.src_address,
                    range_proto_min=low, range_proto_max=high))
            else:
                exec_actions.append(parser.NXActionNAT(flags=0))
        if action.mark is not None:
            exec_actions.append(parser.OFPActionSetField(ct_mark=action.mark))
        zone_src, zone = "", action.zone
        if action.zone_field is not None:  # the zone a field holds (16 bits of it)
            zone_src, zone = action.zone_field, nicira_ext.ofs_nbits(0, 15)
        return [parser.NXActionCT(
            flags=nicira_ext.NX_CT_F_COMMIT if action.commit else 0,
            zone_src=zone_src, zone_ofs_nbits=zone,
            recirc_table=nicira_ext.NX_CT_RECIRC_NONE if action.table is None else action.table,
            alg=0, actions=exec_actions)]
    if isinstance(action, Learn):
        specs: list[Any] = [
            parser.NXFlowSpecMatch(src=value, dst=(name, 0), n_bits=bits)
            for name, value, bits in action.match_values
        ] + [
            parser.NXFlowSpecMatch(src=(name, 0), dst=(name, 0), n_bits=bits)
            for name, bits in action.match_fields
        ] + [
            parser.NXFlowSpecLoad(src=(load.src, 0), dst=(load.dst, 0), n_bits=load.n_bits)
            for load in action.loads
        ] + [
            parser.NXFlowSpecLoad(src=value, dst=(name, 0), n_bits=bits)
            for name, value, bits in action.load_values
        ]
        if action.output_from:
            specs.append(parser.NXFlowSpecOutput(src=(action.output_from, 0), n_bits=32))
        return [parser.NXActionLearn(
            table_id=action.table, specs=specs, priority=action.priority,
            cookie=action.cookie, idle_timeout=action.idle_timeout,
            fin_idle_timeout=action.fin_idle_timeout)]
    raise TypeError(f"unknown action {action!r}")


# Nicira fields whose prerequisites OVS checks against the fields before them in the match
# (os-ken sorts Nicira fields ahead of the OpenFlow basic ones such as eth_type).
_AFTER_PREREQUISITES = ("ip_frag",)


def of_match(fields: tuple[tuple[str, Any], ...]) -> Any:
    """An OpenFlow match in os-ken's order, with fields like ip_frag moved after eth_type."""
    if not any(name in _AFTER_PREREQUISITES for name, _ in fields):
        return parser.OFPMatch(**dict(fields))
    ordered = parser.OFPMatch(**dict(fields))._fields2
    late = [f for f in ordered if f[0] in _AFTER_PREREQUISITES]
    return parser.OFPMatch(_ordered_fields=[f for f in ordered if f not in late] + late)


def actions(acts: tuple[Action, ...]) -> list[Any]:
    return [a for act in acts for a in _action(act)]


def flow_add(datapath: Any, flow: Flow) -> Any:
    return parser.OFPFlowMod(
        datapath, cookie=flow.cookie, table_id=flow.table, command=ofp.OFPFC_ADD,
        idle_timeout=flow.idle_timeout, hard_timeout=flow.hard_timeout,
        priority=flow.priority, flags=0,
        match=of_match(flow.match),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions(flow.actions))]
        if flow.actions else [])


def lease_add(datapath: Any, generation: int, draining: bool, hard_timeout: int) -> Any:
    """(Re)install the leader's lease on a Mux's br-phy; an ADD of the same flow replaces it,
    restarting its duration."""
    return parser.OFPFlowMod(
        datapath, cookie=lease_cookie(generation, draining), table_id=LEASE_TABLE,
        command=ofp.OFPFC_ADD, idle_timeout=0, hard_timeout=hard_timeout,
        priority=LEASE_PRIORITY, flags=0, match=parser.OFPMatch(eth_type=LEASE_ETH_TYPE),
        instructions=[])


def flow_delete_strict(datapath: Any, table: int, priority: int, cookie: int, match: Any) -> Any:
    """Delete exactly one installed flow: its match and cookie. The match is either what the
    switch reported (an os-ken OFPMatch) or, for a flow we installed, our own match tuple."""
    if isinstance(match, tuple):
        match = of_match(match)
    return parser.OFPFlowMod(
        datapath, cookie=cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=table,
        command=ofp.OFPFC_DELETE_STRICT, priority=priority,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match)


def bucket(b: Bucket) -> Any:
    """The os-ken bucket of `b` (what group_mod sends, encoded once: see EncodedBucket)."""
    return parser.OFPBucket(
        bucket_id=b.bucket_id, actions=actions(b.actions),
        properties=[parser.OFPGroupBucketPropWeight(type_=ofp.OFPGBPT_WEIGHT, weight=b.weight)])


@functools.lru_cache(maxsize=1 << 16)
def _bucket_bytes(b: Bucket) -> bytes:
    buf = bytearray()
    bucket(b).serialize(buf, 0)
    return bytes(buf)


class EncodedBucket:
    """A bucket os-ken's OFPGroupMod serializes by copying bytes encoded once per distinct
    bucket: a change to an endpoint's slot table re-sends its group of 256 buckets, and
    encoding each one's actions again made most of a config write's cost on the leader."""

    def __init__(self, b: Bucket):
        self.data = _bucket_bytes(b)
        self.len = len(self.data)

    def serialize(self, buf: bytearray, offset: int) -> None:
        if len(buf) < offset:
            buf += bytes(offset - len(buf))
        buf[offset:offset + self.len] = self.data


def group_mod(datapath: Any, group: Group, command: int) -> Any:
    return parser.OFPGroupMod(
        datapath, command=command, type_=ofp.OFPGT_SELECT, group_id=group.group_id,
        buckets=[EncodedBucket(b) for b in group.buckets],
        properties=[SelectionMethodProperty("dp_hash", ())])


# --- encoded once: a plan's messages as bytes, cached by value -----------------------------
# A change to an endpoint's slot table re-sends its 256-bucket group, the same group to every
# Mux, and a weight that goes back and forth re-sends the same split-bin flows: encoding each
# again made most of a config write's cost on the leader. The bytes carry xid 0 (`with_xid`).

_HEADER = struct.Struct(ofp.OFP_HEADER_PACK_STR)
_CONTROL_LEN = ofp.OFP_HEADER_SIZE + struct.calcsize(ofp.OFP_BUNDLE_CTRL_MSG_PACK_STR)
_ADD_HEAD_LEN = ofp.OFP_HEADER_SIZE + struct.calcsize(ofp.OFP_BUNDLE_ADD_MSG_0_PACK_STR)
_XID = struct.Struct("!I")


class _Encoding:
    """All that os-ken's messages read from their datapath to encode themselves."""

    ofproto = ofp
    ofproto_parser = parser


ENCODING = _Encoding()


def _bytes(message: Any) -> bytes:
    message.xid = 0
    message.serialize()
    return bytes(message.buf)


def with_xid(message: bytes, xid: int) -> bytes:
    return message[:4] + _XID.pack(xid) + message[8:]


def take_xid(datapath: Any) -> int:
    """The datapath's next xid, as os-ken's Datapath.set_xid counts them."""
    datapath.xid = (datapath.xid + 1) & ofp.MAX_XID
    return int(datapath.xid)


@functools.lru_cache(maxsize=1024)
def encoded_group_mod(group: Group, command: int) -> bytes:
    return _bytes(group_mod(ENCODING, group, command))


@functools.lru_cache(maxsize=1 << 14)
def encoded_flow_add(flow: Flow) -> bytes:
    return _bytes(flow_add(ENCODING, flow))


@functools.lru_cache(maxsize=1 << 14)
def _encoded_flow_delete(table: int, priority: int, cookie: int,
                         match: tuple[tuple[str, Any], ...]) -> bytes:
    return _bytes(flow_delete_strict(ENCODING, table, priority, cookie, match))


def encoded_flow_delete(table: int, priority: int, cookie: int, match: Any) -> bytes:
    if isinstance(match, tuple):  # our own match: cacheable; a switch's OFPMatch is not
        return _encoded_flow_delete(table, priority, cookie, match)
    return _bytes(flow_delete_strict(ENCODING, table, priority, cookie, match))


def encoded_group_delete(group_id: int) -> bytes:
    return _bytes(group_delete(ENCODING, group_id))


def bundle(bundle_id: int, messages: list[bytes], take_xid: Callable[[], int]) -> list[bytes]:
    """Encoded `messages` (the encoded_* functions) as one atomic, ordered OpenFlow bundle:
    open, add each, commit (nothing when there are none), with xids from `take_xid` in that
    order. The switch applies all of them or, if one fails, none."""
    if not messages:
        return []
    flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
    bundle_id &= 0xFFFFFFFF

    def control(kind: int) -> bytes:
        return _HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_BUNDLE_CONTROL, _CONTROL_LEN, take_xid()) \
            + struct.pack(ofp.OFP_BUNDLE_CTRL_MSG_PACK_STR, bundle_id, kind, flags)

    def add(message: bytes) -> bytes:
        xid = take_xid()  # OpenFlow: the inner message's xid is the outer one's
        return (_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_BUNDLE_ADD_MESSAGE,
                             _ADD_HEAD_LEN + len(message), xid)
                + struct.pack(ofp.OFP_BUNDLE_ADD_MSG_0_PACK_STR, bundle_id, flags)
                + with_xid(message, xid))

    return ([control(ofp.OFPBCT_OPEN_REQUEST)] + [add(m) for m in messages]
            + [control(ofp.OFPBCT_COMMIT_REQUEST)])


def group_add(datapath: Any, group: Group) -> Any:
    return group_mod(datapath, group, ofp.OFPGC_ADD)


def group_modify(datapath: Any, group: Group) -> Any:
    return group_mod(datapath, group, ofp.OFPGC_MODIFY)


def meter_mod(datapath: Any, meter: Meter, command: int) -> Any:
    return parser.OFPMeterMod(
        datapath, command=command, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
        meter_id=meter.meter_id,
        bands=[parser.OFPMeterBandDrop(rate=meter.rate_pps, burst_size=meter.burst)])


def meter_add(datapath: Any, meter: Meter) -> Any:
    return meter_mod(datapath, meter, ofp.OFPMC_ADD)


def meter_modify(datapath: Any, meter: Meter) -> Any:
    return meter_mod(datapath, meter, ofp.OFPMC_MODIFY)


def meter_delete(datapath: Any, meter_id: int) -> Any:
    return parser.OFPMeterMod(datapath, command=ofp.OFPMC_DELETE, flags=0, meter_id=meter_id,
                              bands=[])


def group_delete(datapath: Any, group_id: int) -> Any:
    return parser.OFPGroupMod(datapath, command=ofp.OFPGC_DELETE, type_=ofp.OFPGT_SELECT,
                              group_id=group_id)


# OVS's fragment handling "nx-match": a first fragment's ports can be matched (the default,
# "normal", zeroes them), so the Mux places a first fragment by its 5-tuple.
OFPC_FRAG_NX_MATCH = 3
MISS_SEND_LEN = 128


def set_config(datapath: Any) -> Any:
    return parser.OFPSetConfig(datapath, OFPC_FRAG_NX_MATCH, MISS_SEND_LEN)


def packet_out_to_table(datapath: Any, in_port: int, data: bytes) -> Any:
    """Send `data` through the switch's pipeline from table 0 as if it came in on `in_port`."""
    return parser.OFPPacketOut(datapath, buffer_id=ofp.OFP_NO_BUFFER,
                               match=parser.OFPMatch(in_port=in_port),
                               actions=[parser.OFPActionOutput(ofp.OFPP_TABLE)], data=data)
