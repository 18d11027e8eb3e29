"""The os-ken application: the only place the Manager touches OpenFlow I/O (imperative shell).

On every switch connection, and whenever the services change, it asks the switch for its flows
and groups, plans the difference against the compiled desired program (reconcile.plan) and
sends it, closed by a barrier. Everything it decides comes from pure modules.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_5

from ananta.config import InvalidConfig
from ananta.controller import ofmsg
from ananta.controller.config import ManagerConfig, load_services
from ananta.controller.desired import SwitchTarget, desired_programs, switch_targets
from ananta.controller.flows import Group, SwitchProgram
from ananta.controller.model import Services
from ananta.controller.reconcile import InstalledFlow, plan

LOG = logging.getLogger("ananta.manager")
SYNC_TIMEOUT = 5.0  # seconds for a switch to answer the dumps and the barrier


@dataclass
class SwitchSession:
    datapath: Any
    target: SwitchTarget
    flows: list[InstalledFlow] = field(default_factory=list)
    groups: dict[int, Group | None] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    sent_groups: dict[int, Group] = field(default_factory=dict)
    resync: bool = False
    started: float = 0.0
    barrier_xid: int | None = None


class AnantaManagerApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_5.OFP_VERSION]
    config: ManagerConfig  # set by ananta.controller.main before the app starts

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()
        self.targets = switch_targets(self.config.inventory)
        self.sessions: dict[int, SwitchSession] = {}
        self.services_mtime = 0.0
        self.services = self._load_services_or_exit()
        self.programs = desired_programs(self.services, self.config.inventory)
        self.watcher = hub.spawn(self._watch_services)

    # --- services file -------------------------------------------------------------------

    def _load_services_or_exit(self) -> Services:
        path = self.config.services_file
        if not os.path.exists(path):
            LOG.info("services file %s does not exist yet: no VIPs", path)
            return Services()
        self.services_mtime = os.stat(path).st_mtime
        return load_services(path, self.config.inventory)

    def _watch_services(self) -> None:
        path = self.config.services_file
        while True:
            hub.sleep(0.5)
            self._restart_stalled_syncs()
            try:
                mtime = os.stat(path).st_mtime if os.path.exists(path) else 0.0
                if mtime == self.services_mtime:
                    continue
                self.services_mtime = mtime
                services = load_services(path, self.config.inventory) if mtime else Services()
            except InvalidConfig as exc:
                LOG.error("refused new services, keeping the current ones: %s", exc)
                continue
            programs = desired_programs(services, self.config.inventory)
            with self.lock:
                self.services, self.programs = services, programs
                LOG.info("services changed: %d VIPs; reconciling %d switches",
                         len(services.vips), len(self.sessions))
                for session in self.sessions.values():
                    self._start_sync(session)

    def _restart_stalled_syncs(self) -> None:
        """A reply the switch never sent (or os-ken could not parse) must not stall a switch."""
        with self.lock:
            now = time.monotonic()
            for session in self.sessions.values():
                busy = session.pending or session.barrier_xid is not None
                if busy and now - session.started > SYNC_TIMEOUT:
                    LOG.error("%s: no complete answer in %.0f s; starting over",
                              session.target.label, SYNC_TIMEOUT)
                    session.pending, session.barrier_xid = set(), None
                    self._start_sync(session)

    # --- switch lifecycle ----------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        with self.lock:
            if ev.state == MAIN_DISPATCHER:
                target = self.targets.get(dp.id)
                if target is None:
                    LOG.warning("unknown switch dpid %016x connected; ignoring it", dp.id)
                    return
                LOG.info("switch %s (dpid %016x) connected", target.label, dp.id)
                session = SwitchSession(dp, target)
                self.sessions[dp.id] = session
                self._start_sync(session)
            elif ev.state == DEAD_DISPATCHER and dp.id in self.sessions and (
                    self.sessions[dp.id].datapath is dp):
                LOG.info("switch %s disconnected", self.sessions[dp.id].target.label)
                del self.sessions[dp.id]

    def _start_sync(self, session: SwitchSession) -> None:
        if session.pending or session.barrier_xid is not None:
            session.resync = True
            return
        dp = session.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        session.flows, session.groups = [], {}
        session.pending = {"flows", "groups"}
        session.started = time.monotonic()
        dp.send_msg(parser.OFPFlowDescStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                               0, 0, parser.OFPMatch()))
        # Group *stats* (ids and counters), not group descriptions: os-ken 4.2 cannot parse
        # OpenFlow 1.5 bucket lists with properties. Content is known from what we sent.
        dp.send_msg(parser.OFPGroupStatsRequest(dp, 0, ofp.OFPG_ALL))

    @set_ev_cls(ofp_event.EventOFPFlowDescStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is None or "flows" not in session.pending:
                return
            session.flows += [InstalledFlow(s.table_id, s.priority, s.cookie, s.match)
                              for s in msg.body]
            if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                session.pending.discard("flows")
                self._maybe_apply(session)

    @set_ev_cls(ofp_event.EventOFPGroupStatsReply, MAIN_DISPATCHER)
    def _group_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is None or "groups" not in session.pending:
                return
            for g in msg.body:
                session.groups[g.group_id] = session.sent_groups.get(g.group_id)
            if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                session.pending.discard("groups")
                self._maybe_apply(session)

    def _maybe_apply(self, session: SwitchSession) -> None:
        if session.pending:
            return
        desired: SwitchProgram = self.programs.get(session.target.dpid, SwitchProgram())
        steps = plan(desired, session.flows, session.groups)
        dp = session.datapath
        try:  # encode everything first: a bad message must not leave a half-sent plan
            messages = (
                [ofmsg.group_add(dp, g) for g in steps.add_groups]
                + [ofmsg.group_modify(dp, g) for g in steps.modify_groups]
                + [ofmsg.flow_add(dp, f) for f in steps.add_flows]
                + [ofmsg.flow_delete_strict(dp, s.table, s.priority, s.cookie, s.match)
                   for s in steps.delete_flows]
                + [ofmsg.group_delete(dp, gid) for gid in steps.delete_groups]
            )
            for message in messages:
                message.serialize()
        except Exception:
            LOG.exception("%s: cannot encode the plan; switch left as it is", session.target.label)
            return
        for message in messages:
            dp.send_msg(message)
        for group in (*steps.add_groups, *steps.modify_groups):
            session.sent_groups[group.group_id] = group
        for gid in steps.delete_groups:
            session.sent_groups.pop(gid, None)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        session.barrier_xid = barrier.xid
        dp.send_msg(barrier)
        if not steps.empty:
            LOG.info("%s: +%d/-%d flows, +%d/~%d/-%d groups", session.target.label,
                     len(steps.add_flows), len(steps.delete_flows), len(steps.add_groups),
                     len(steps.modify_groups), len(steps.delete_groups))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev: Any) -> None:
        with self.lock:
            session = self.sessions.get(ev.msg.datapath.id)
            if session is None or ev.msg.xid != session.barrier_xid:
                return
            session.barrier_xid = None
            LOG.info("%s programmed in %.1f ms", session.target.label,
                     (time.monotonic() - session.started) * 1000)
            if session.resync:
                session.resync = False
                self._start_sync(session)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        target = self.targets.get(msg.datapath.id)
        LOG.error("switch %s refused a message: type=%d code=%d data=%s",
                  target.label if target else msg.datapath.id, msg.type, msg.code,
                  bytes(msg.data[:64]).hex())
