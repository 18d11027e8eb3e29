"""Two OpenFlow 1.5 controller connections to one switch, as the fencing test needs them.

Run inside the switch's namespace (`ip netns exec ... python -m tests.ovs.fence_client PORT`).
Connection `old` plays a deposed Manager leader (term 4), `new` the new leader (term 5),
using the role requests the Manager's os-ken app sends (MASTER, generation_id = Raft term).
Prints one JSON object describing what the switch answered.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from ananta.controller import ofmsg
from ananta.controller.flows import Flow, FlowKind, Output, match

DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, id=0)
OFPT_ERROR, OFPT_ROLE_REPLY, OFPT_BARRIER_REPLY = 1, 25, 21


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.xid = 100
        self.send(parser.OFPHello(DP))
        self.recv_until(lambda t: t == 0)  # the switch's hello

    def send(self, msg: Any) -> int:
        self.xid += 1
        msg.xid = self.xid
        msg.serialize()
        self.sock.sendall(msg.buf)
        return self.xid

    def recv(self) -> tuple[int, int, bytes]:
        head = self._read(8)
        _, mtype, length, xid = struct.unpack("!BBHI", head)
        return mtype, xid, self._read(length - 8)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("switch closed the connection")
            data += chunk
        return data

    def recv_until(self, want: Any) -> tuple[int, bytes]:
        while True:
            mtype, _, body = self.recv()
            if mtype == 2:  # echo request
                continue
            if want(mtype):
                return mtype, body

    def role(self, role: int, generation: int) -> str:
        self.send(parser.OFPRoleRequest(DP, role, ofp.OFPCID_UNDEFINED, generation))
        mtype, body = self.recv_until(lambda t: t in (OFPT_ERROR, OFPT_ROLE_REPLY))
        return describe(mtype, body)

    def flow_add(self, flow: Flow) -> str:
        self.send(ofmsg.flow_add(DP, flow))
        self.send(parser.OFPBarrierRequest(DP))
        mtype, body = self.recv_until(lambda t: t in (OFPT_ERROR, OFPT_BARRIER_REPLY))
        return describe(mtype, body)


def describe(mtype: int, body: bytes) -> str:
    if mtype == OFPT_ERROR:
        etype, code = struct.unpack("!HH", body[:4])
        names = {(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE): "error:stale",
                 (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE): "error:is_slave"}
        return names.get((etype, code), f"error:{etype}/{code}")
    if mtype == OFPT_ROLE_REPLY:
        role = struct.unpack("!I", body[:4])[0]
        return {ofp.OFPCR_ROLE_MASTER: "master", ofp.OFPCR_ROLE_SLAVE: "slave"}.get(role, "?")
    return "ok"


def main() -> None:
    port = int(sys.argv[1])
    old, new = Conn(port), Conn(port)
    out = {"old_claims_master_term4": old.role(ofp.OFPCR_ROLE_MASTER, 4),
           "old_writes_as_master": old.flow_add(Flow(0, 7, match(in_port=1), (Output(2),),
                                                     FlowKind.DEFAULT, "old-1")),
           "new_claims_master_term5": new.role(ofp.OFPCR_ROLE_MASTER, 5),
           "old_writes_after_new_leader": old.flow_add(Flow(0, 8, match(in_port=1), (Output(3),),
                                                            FlowKind.DEFAULT, "old-2")),
           "old_reclaims_master_term4": old.role(ofp.OFPCR_ROLE_MASTER, 4),
           "new_writes": new.flow_add(Flow(0, 9, match(in_port=1), (Output(4),),
                                           FlowKind.DEFAULT, "new-1"))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
