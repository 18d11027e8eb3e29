"""The os-ken application: the only place the Manager touches OpenFlow I/O (imperative shell).

Every replica connects to every switch. The Raft leader claims the OpenFlow MASTER role with
generation_id = its Raft term; the others are SLAVE, so a deposed leader can no longer change
a switch (the switch itself refuses it). The leader, on every switch connection, on becoming
leader, and whenever the replicated config generation moves, asks the switch for its flows
and groups, plans the difference against the compiled desired program (reconcile.plan) and
sends it, closed by a barrier; the barrier reply records the generation the switch now holds.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import json
import logging
import threading
import time
import uuid
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

from ananta.controller import ofmsg, snat_hold
from ananta.controller.compile_host import T_SNAT_OUT
from ananta.controller.compile_mux import (
    FRAGMENT_METER_ID,
    meter_ids,
)
from ananta.controller.desired import SwitchTarget, desired_programs, switch_targets
from ananta.controller.flows import (
    Flow,
    FlowKind,
    Group,
    Meter,
    SwitchProgram,
    kind_cookie,
)
from ananta.controller.model import Inventory
from ananta.controller.mux_watch import FRAGMENT_METER_OWNER, METER_DROPS
from ananta.controller.reconcile import InstalledFlow, Plan, plan, plan_change
from ananta.controller.service import ReplicaService
from ananta.controller.snat import SnatBlock
from ananta.controller.state import expired_drains

LOG = logging.getLogger("ananta.manager")
NO_PROGRAM = SwitchProgram()  # of a switch the inventory gives nothing to
SYNC_TIMEOUT = 5.0  # seconds for a switch to answer the dumps and the barrier
AUDIT_INTERVAL = 30.0  # seconds between full dumps of an idle, known switch (drift repair)
LEASE_REFRESH = 1.0  # s between lease renewals (each flow_mod makes OVS revalidate its flows)
LEASE_IN_STEP = 1.0  # a Mux that confirmed a sync this recently is keeping up with the config
LEASE_HARD_TIMEOUT = 60  # a lease nobody renews leaves the switch eventually
COUNTER_INTERVAL = 1.0  # seconds between reads of the Muxes' per-VIP counters
HOSTS_WAIT_LIMIT = 1.0  # seconds the hosts wait for the Muxes to take new SNAT blocks
# Python's full garbage collection walks every tracked object with the GIL held: 0.2 s for
# the state of 10k VIPs, ~2 s with their compiled programs, long enough for Raft to elect
# another leader. Long-lived objects (state, programs) are moved out of its reach: after
# each compile, and on every replica this often (after collecting the young generations).
GC_FREEZE_INTERVAL = 10.0
COUNTED_KINDS = {"phy": (FlowKind.VIP_STEER,),
                 "int": (FlowKind.VIP_ENDPOINT, FlowKind.VIP_NO_ENDPOINT, FlowKind.FRAGMENT)}
COUNTED = frozenset(kind for kinds in COUNTED_KINDS.values() for kind in kinds)


def counted_owners(program: SwitchProgram) -> dict[int, str]:
    """Cookie -> owner of the program's flows whose counters /metrics reports."""
    owners: dict[int, str] = {}
    for part in program.parts.values() if program.parts is not None else (program.flows,):
        owners.update(_counted_in(part))
    return owners


@functools.lru_cache(maxsize=1 << 16)
def _counted_in(part: frozenset[Flow]) -> dict[int, str]:
    """(Cached: a config write leaves most parts of a Mux's program the same objects.)"""
    return {f.cookie: f.owner for f in part if f.kind in COUNTED}


def _last_part(msg: Any) -> bool:
    """A multipart reply's last message (OpenFlow splits long replies)."""
    return not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE


@dataclass
class SwitchSession:
    datapath: Any
    target: SwitchTarget
    flows: list[InstalledFlow] = field(default_factory=list)
    groups: dict[int, Group | None] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    sent_groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, Meter | None] = field(default_factory=dict)
    sent_meters: dict[int, Meter] = field(default_factory=dict)
    resync: bool = False
    started: float = 0.0
    barrier_xid: int | None = None
    generation: int = 0  # of the program the current sync is applying
    role_sent: tuple[bool, int] | None = None  # (master?, term) last requested
    # The program the switch holds (with learned flows and the lease), as far as this
    # connection knows: set after a sync that the switch confirmed with no error; None means
    # "ask the switch" (a full dump) next time.
    installed: SwitchProgram | None = None
    staged: SwitchProgram = field(default_factory=SwitchProgram)  # of the sync in flight
    errors: int = 0  # error replies during the sync in flight
    audited_at: float = 0.0  # last full dump
    retry_at: float = 0.0  # after a failed sync, when to try again (with a full dump)
    confirmed_generation: int = -1  # of the last sync the switch confirmed
    confirmed_at: float = 0.0
    # each counter request's xid -> the flow kind it asked for, and the counters answered
    counter_xids: dict[int, tuple[FlowKind, dict[tuple[int, str], tuple[int, int]]]] = field(
        default_factory=dict)
    meter_xids: set[int] = field(default_factory=set)


class AnantaManagerApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_5.OFP_VERSION]
    service: ReplicaService  # set by ananta.controller.main before the app starts
    seed_inventory: Inventory | None = None  # proposed by a leader that finds none

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()
        self.bundle_ids = itertools.count(1)  # OpenFlow bundle ids (per connection on a switch)
        self.sessions: dict[int, SwitchSession] = {}
        self.leading: tuple[bool, int] = (False, 0)
        self.generation = -1
        self.inventory: Inventory | None = None
        self.targets: dict[int, SwitchTarget] = {}
        self.programs: dict[int, SwitchProgram] = {}
        self.programs_generation = -1
        self.plans: dict[tuple[int, int], tuple[SwitchProgram, SwitchProgram, Plan]] = {}
        self.plans_generation = -1
        self.datapaths: dict[int, Any] = {}  # every connected switch, known or not
        self.seeding = False
        self.owner_of: dict[int, str] = {}  # cookie -> owner of the counted flows
        self.meter_owner: dict[int, str] = {}  # meter id -> VIP address
        self.draining: frozenset[str] = frozenset()
        self.next_lease = self.next_counters = self.next_freeze = 0.0
        self.expiring: set[str] = set()  # op ids of drain expiries being proposed
        self.held = snat_hold.HoldState()  # VMs' packets waiting for a SNAT block
        # A generation that gave a DIP a new SNAT block is programmed on the Muxes first (the
        # block's return flows), then on the hosts (which start using its ports): else the
        # first replies to those ports reach a Mux that drops them. None: no such wait.
        self.hosts_wait_for: tuple[int, float] | None = None  # (generation, since)
        self.snat_blocks: frozenset[SnatBlock] = frozenset()
        self.watcher = hub.spawn(self._housekeeping)

    # --- replicated state and leadership --------------------------------------------------

    def _housekeeping(self) -> None:
        replicated = self.service.cluster.replicated
        while True:
            # woken by every applied command (so a write is programmed at once), else 20 Hz
            with replicated.changed:
                if replicated.state.generation == self.generation:
                    replicated.changed.wait(0.05)
            try:
                self._follow_cluster()
                self._restart_stalled_syncs()
                with self.lock:
                    self._hosts_may_follow(time.monotonic())
                self._release_held()
                now = time.monotonic()
                if now >= self.next_lease:
                    self.next_lease = now + LEASE_REFRESH
                    self._renew_leases(now)
                if now >= self.next_counters:
                    self.next_counters = now + COUNTER_INTERVAL
                    self._read_counters()
                    self._expire_drains()
                if now >= self.next_freeze:
                    self.next_freeze = now + GC_FREEZE_INTERVAL
                    gc.collect(1)
                    gc.freeze()
            except Exception:  # never let the loop die
                LOG.exception("housekeeping failed")

    def _follow_cluster(self) -> None:
        cluster = self.service.cluster
        leading = (cluster.is_leader, cluster.term)
        replicated = cluster.replicated
        with replicated.lock:
            generation = cluster.state.generation
            moved = generation != self.generation
            if moved:
                inventory = cluster.state.inventory
                # only the leader programs switches: followers do not compile programs
                services = cluster.state.services() if leading[0] else None
                down = frozenset(cluster.state.down)
                snat = dict(cluster.state.snat)
                tables = dict(cluster.state.slot_tables)
            elif leading[0] and self.programs_generation != generation:
                inventory, services, moved = cluster.state.inventory, cluster.state.services(), True
                down = frozenset(cluster.state.down)
                snat = dict(cluster.state.snat)
                tables = dict(cluster.state.slot_tables)
            self.draining = frozenset(cluster.state.draining_muxes)
        with self.lock:
            changed = moved
            if moved:
                if inventory is not self.inventory:
                    self.inventory = inventory
                    self.targets = switch_targets(inventory)
                    self._adopt_known_switches()
                if services is not None:
                    blocks = frozenset(b for bs in snat.values() for b in bs)
                    if blocks - self.snat_blocks and self.snat_blocks:
                        self.hosts_wait_for = (generation, time.monotonic())
                    self.snat_blocks = blocks
                    self.programs = desired_programs(services, inventory, down, snat, tables)
                    gc.freeze()  # they live until the next write (see GC_FREEZE_INTERVAL)
                    self.programs_generation = generation
                    self.owner_of = {}
                    for program in {id(p): p for dpid, p in self.programs.items()
                                    if dpid in self.targets
                                    and self.targets[dpid].role == "mux"}.values():
                        self.owner_of.update(counted_owners(program))
                    self.meter_owner = {mid: vip for vip, mid in
                                        meter_ids(services.vips).items()}
                    self.meter_owner[FRAGMENT_METER_ID] = FRAGMENT_METER_OWNER
                self.generation = generation
            if leading != self.leading:
                LOG.info("Raft: %s in term %d", "leader" if leading[0] else "follower",
                         leading[1])
                self.leading = leading
                for session in self.sessions.values():
                    self._claim_role(session)
                changed = True
            if changed and self.leading[0]:
                for session in self.sessions.values():
                    self._start_sync(session)
        current = cluster.state.inventory
        if (leading[0] and self.seed_inventory and not self.seeding
                and not current.muxes and not current.hosts):
            self.seeding = True
            hub.spawn(self._seed)

    def _expire_drains(self) -> None:
        """The leader makes inactive the draining backends whose deadline passed."""
        if not self.leading[0]:
            return
        replicated = self.service.cluster.replicated
        with replicated.lock:
            due = expired_drains(self.service.cluster.state, time.time())
        for op_id, command in due:
            if op_id not in self.expiring:
                self.expiring.add(op_id)
                hub.spawn(self._propose_expiry, op_id, command)

    def _propose_expiry(self, op_id: str, command: dict[str, Any]) -> None:
        try:
            result = self.service.propose(command, op_id)
            LOG.info("drain deadline of %s passed: now inactive (%s)", command["address"],
                     result.get("status"))
        except Exception as exc:
            LOG.error("could not end the drain of %s (will retry): %s", command["address"], exc)
        finally:
            self.expiring.discard(op_id)

    def _seed(self) -> None:
        """A new, empty cluster takes its inventory from the leader's config file."""
        assert self.seed_inventory is not None
        inventory = self.seed_inventory.model_dump(mode="json")
        # the op id is a digest of the inventory: replicas racing to seed apply it once
        op_id = hashlib.sha256(json.dumps(inventory, sort_keys=True).encode()).hexdigest()[:32]
        try:
            result = self.service.propose({"op": "set_inventory", "inventory": inventory}, op_id)
            LOG.info("seeded the inventory from the config: %s", result)
        except Exception as exc:
            LOG.error("could not seed the inventory (will retry): %s", exc)
        finally:
            self.seeding = False

    def _adopt_known_switches(self) -> None:
        """Switches that connected before the inventory named them get a session now."""
        for dpid, dp in self.datapaths.items():
            target = self.targets.get(dpid)
            if target is not None and dpid not in self.sessions:
                LOG.info("switch %s (dpid %016x) is now in the inventory", target.label, dpid)
                session = SwitchSession(dp, target)
                self.sessions[dpid] = session
                self._claim_role(session)
                self._start_sync(session)

    def _claim_role(self, session: SwitchSession) -> None:
        """MASTER with generation_id = Raft term on the leader, SLAVE elsewhere."""
        master, term = self.leading
        if session.role_sent == (master, term):
            return
        dp = session.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        role = ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
        dp.send_msg(parser.OFPRoleRequest(dp, role, ofp.OFPCID_UNDEFINED, term))
        session.role_sent = (master, term)

    def _renew_leases(self, now: float) -> None:
        """Renew the lease of every Mux that is in step with the config (its BGP speaker
        announces only while the lease is fresh), saying whether it is draining."""
        with self.lock:
            if not self.leading[0]:
                return
            for session in self.sessions.values():
                t = session.target
                in_step = (session.confirmed_generation == self.generation
                           or now - session.confirmed_at < LEASE_IN_STEP)
                if t.role == "mux" and t.bridge == "phy" and in_step:
                    draining = t.node in self.draining
                    session.datapath.send_msg(ofmsg.lease_add(
                        session.datapath, session.confirmed_generation, draining,
                        LEASE_HARD_TIMEOUT))
                    self.service.mux_watch.record_lease(t.node, draining, now)

    def _read_counters(self) -> None:
        """Ask every Mux for the counters of its per-VIP flows (answers in _flow_stats)."""
        with self.lock:
            if not self.leading[0]:
                return
            for session in self.sessions.values():
                if session.target.role != "mux":
                    continue
                dp = session.datapath
                parser, ofp = dp.ofproto_parser, dp.ofproto
                for kind in COUNTED_KINDS[session.target.bridge]:
                    req = parser.OFPFlowDescStatsRequest(
                        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                        kind_cookie(kind), 0xFFFF << 48, parser.OFPMatch())
                    dp.set_xid(req)
                    session.counter_xids[req.xid] = (kind, {})
                    dp.send_msg(req)
                while len(session.counter_xids) > 16:  # never answered: forget
                    session.counter_xids.pop(next(iter(session.counter_xids)))
                if session.target.bridge == "int" and self.meter_owner:
                    req = parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL)
                    dp.set_xid(req)
                    session.meter_xids = {*list(session.meter_xids)[-8:], req.xid}
                    dp.send_msg(req)

    def _restart_stalled_syncs(self) -> None:
        """A reply the switch never sent (or os-ken could not parse) must not stall a switch;
        a failed sync is retried; an idle switch is audited against a full dump now and then."""
        with self.lock:
            now = time.monotonic()
            for session in self.sessions.values():
                busy = session.pending or session.barrier_xid is not None
                if busy and now - session.started > SYNC_TIMEOUT:
                    LOG.error("%s: no complete answer in %.0f s; starting over",
                              session.target.label, SYNC_TIMEOUT)
                    session.pending, session.barrier_xid = set(), None
                    session.installed = None
                    self._start_sync(session)
                elif not busy and session.installed is None and 0 < session.retry_at <= now:
                    session.retry_at = 0.0
                    self._start_sync(session)
                elif not busy and now - session.audited_at > AUDIT_INTERVAL:
                    session.installed = None
                    self._start_sync(session)

    # --- switch lifecycle ----------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        with self.lock:
            if ev.state == MAIN_DISPATCHER:
                self.datapaths[dp.id] = dp
                target = self.targets.get(dp.id)
                if target is None:
                    LOG.warning("switch dpid %016x is not in the inventory (yet)", dp.id)
                    return
                LOG.info("switch %s (dpid %016x) connected", target.label, dp.id)
                session = SwitchSession(dp, target)
                self.sessions[dp.id] = session
                self._claim_role(session)
                if self.leading[0]:
                    self._start_sync(session)
            elif ev.state == DEAD_DISPATCHER:
                if dp.id in self.datapaths and self.datapaths[dp.id] is dp:
                    del self.datapaths[dp.id]
                if dp.id in self.sessions and self.sessions[dp.id].datapath is dp:
                    LOG.info("switch %s disconnected", self.sessions[dp.id].target.label)
                    del self.sessions[dp.id]

    def _start_sync(self, session: SwitchSession) -> None:
        if not self.leading[0]:
            return
        if self.hosts_wait_for is not None and session.target.role == "host":
            session.resync = True  # started by _hosts_may_follow
            return
        if session.pending or session.barrier_xid is not None:
            session.resync = True
            return
        dp = session.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        session.started = time.monotonic()
        session.generation = self.generation
        session.errors = 0
        if session.installed is not None:
            # The switch holds the program it last confirmed: plan the change from it (in
            # proportion to what changed), one round trip.
            desired = self.programs.get(session.target.dpid, NO_PROGRAM)
            self._send_plan(session, desired, self._plan_change(session.installed, desired))
            return
        session.flows, session.groups, session.meters = [], {}, {}
        session.pending = {"flows", "groups", "meters"}
        if session.target.role == "mux":  # a (re)connected Mux: its fragment mode
            dp.send_msg(ofmsg.set_config(dp))
        session.audited_at = session.started
        dp.send_msg(parser.OFPFlowDescStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                               0, 0, parser.OFPMatch()))
        # Group *stats* (ids and counters), not group descriptions: os-ken 4.2 cannot parse
        # OpenFlow 1.5 bucket lists with properties. Content is known from what we sent.
        dp.send_msg(parser.OFPGroupStatsRequest(dp, 0, ofp.OFPG_ALL))
        dp.send_msg(parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL))

    @set_ev_cls(ofp_event.EventOFPFlowDescStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is not None and msg.xid in session.counter_xids:
                kind, counters = session.counter_xids[msg.xid]
                for s in msg.body:
                    stats = dict(s.stats.fields) if s.stats is not None else {}
                    owner = self.owner_of.get(s.cookie)
                    if owner is not None:
                        counters[((s.cookie >> 48) & 0xFF, owner)] = (
                            stats.get("packet_count", 0), stats.get("byte_count", 0))
                if _last_part(msg):
                    del session.counter_xids[msg.xid]
                    t = session.target
                    self.service.mux_watch.record_counters(t.node, t.bridge, counters,
                                                           time.monotonic(), kind)
                return
            if session is None or "flows" not in session.pending:
                return
            session.flows += [InstalledFlow(s.table_id, s.priority, s.cookie, s.match)
                              for s in msg.body]
            self._dump_part_done(session, "flows", msg)

    @set_ev_cls(ofp_event.EventOFPGroupStatsReply, MAIN_DISPATCHER)
    def _group_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is None or "groups" not in session.pending:
                return
            for g in msg.body:
                session.groups[g.group_id] = session.sent_groups.get(g.group_id)
            self._dump_part_done(session, "groups", msg)

    @set_ev_cls(ofp_event.EventOFPMeterStatsReply, MAIN_DISPATCHER)
    def _meter_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is not None and msg.xid in session.meter_xids:
                session.meter_xids.discard(msg.xid)  # (a few meters: one reply)
                drops = {(METER_DROPS, self.meter_owner[m.meter_id]):
                         (sum(b.packet_band_count for b in m.band_stats), 0)
                         for m in msg.body if m.meter_id in self.meter_owner}
                self.service.mux_watch.record_counters(session.target.node, "meters", drops,
                                                       time.monotonic())
                return
            if session is None or "meters" not in session.pending:
                return
            for m in msg.body:
                session.meters[m.meter_id] = session.sent_meters.get(m.meter_id)
            self._dump_part_done(session, "meters", msg)

    def _dump_part_done(self, session: SwitchSession, kind: str, msg: Any) -> None:
        """One part of a full dump's `kind` (flows, groups, meters) is in; after the last
        one, the plan can be made once the other kinds are in too."""
        if _last_part(msg):
            session.pending.discard(kind)
            self._maybe_apply(session)

    def _maybe_apply(self, session: SwitchSession) -> None:
        if session.pending:
            return
        if session.generation != self.generation:  # the config moved on while we asked
            self._start_sync(session)
            return
        desired = self.programs.get(session.target.dpid, NO_PROGRAM)
        steps = plan(desired, session.flows, session.groups, session.meters)
        session.flows, session.groups, session.meters = [], {}, {}  # the dump is used
        self._send_plan(session, desired, steps)

    def _plan_change(self, old: SwitchProgram, new: SwitchProgram) -> Plan:
        """plan_change, once per pair of programs in a generation: the Muxes share their
        programs, so a config write asks each of them the same change."""
        if self.plans_generation != self.generation:
            self.plans, self.plans_generation = {}, self.generation
        key = (id(old), id(new))
        if key not in self.plans:  # (the programs are kept with it: their ids stay theirs)
            self.plans[key] = (old, new, plan_change(old, new))
        return self.plans[key][2]

    def _send_plan(self, session: SwitchSession, desired: SwitchProgram, steps: Plan) -> None:
        dp = session.datapath
        try:  # encode everything first: a bad message must not leave a half-sent plan
            # Groups and flows go in one OpenFlow bundle, committed atomically (one table
            # version on the switch: no packet sees half a plan, and one revalidation), in
            # this order: groups before the flows that use them; new flows before modified
            # groups (a slot-table bin that becomes split points at new table-4 flows); old
            # flows, then groups, once nothing points at them. OVS takes no meter mods in a
            # bundle: new meters go before it, old ones after. Messages are encoded once per
            # value (ofmsg's encoded_*), and the xids are taken in the order they are sent.
            bundled = (
                [ofmsg.encoded_group_mod(g, dp.ofproto.OFPGC_ADD) for g in steps.add_groups]
                + [ofmsg.encoded_flow_add(f) for f in steps.add_flows]
                + [ofmsg.encoded_group_mod(g, dp.ofproto.OFPGC_MODIFY) for g in steps.modify_groups]
                + [ofmsg.encoded_flow_delete(s.table, s.priority, s.cookie, s.match)
                   for s in steps.delete_flows]
                + [ofmsg.encoded_group_delete(gid) for gid in steps.delete_groups]
            )
            before = ([ofmsg.meter_add(dp, m) for m in steps.add_meters]
                      + [ofmsg.meter_modify(dp, m) for m in steps.modify_meters])
            after = [ofmsg.meter_delete(dp, mid) for mid in steps.delete_meters]
            frames = self._encode(dp, before)
            frames += ofmsg.bundle(next(self.bundle_ids), bundled, lambda: ofmsg.take_xid(dp))
            frames += self._encode(dp, after)
        except Exception:
            LOG.exception("%s: cannot encode the plan; switch left as it is", session.target.label)
            return
        for frame in frames:
            dp.send(frame)
        session.staged = desired
        for group in (*steps.add_groups, *steps.modify_groups):
            session.sent_groups[group.group_id] = group
        for gid in steps.delete_groups:
            session.sent_groups.pop(gid, None)
        for meter in (*steps.add_meters, *steps.modify_meters):
            session.sent_meters[meter.meter_id] = meter
        for mid in steps.delete_meters:
            session.sent_meters.pop(mid, None)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        session.barrier_xid = barrier.xid
        dp.send_msg(barrier)
        if not steps.empty:
            LOG.debug("%s: +%d/-%d flows, +%d/~%d/-%d groups", session.target.label,
                     len(steps.add_flows), len(steps.delete_flows), len(steps.add_groups),
                     len(steps.modify_groups), len(steps.delete_groups))

    @staticmethod
    def _encode(dp: Any, messages: list[Any]) -> list[bytes]:
        for message in messages:
            dp.set_xid(message)
            message.serialize()
        return [bytes(m.buf) for m in messages]

    # --- SNAT: a VM's packet that found no free port waits for a block here ---------------

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if (not self.leading[0] or session is None or session.target.role != "host"
                    or session.target.bridge != "int" or msg.table_id != T_SNAT_OUT):
                return
            host = session.target.node
            dip = snat_hold.ipv4_source(bytes(msg.data))
            vms = {vm.address for h in (self.inventory.hosts if self.inventory else ())
                   if h.name == host for vm in h.vms}
            if dip not in vms:
                return
            packet = snat_hold.HeldPacket(int(msg.match["in_port"]), bytes(msg.data))
            self.held, decision = snat_hold.on_packet(self.held, dip, host, msg.datapath.id,
                                                      packet, time.monotonic())
        self.service.count_snat_hold(
            "dropped" if decision is snat_hold.Decision.DROPPED else "held")
        if decision is snat_hold.Decision.REQUEST:
            hub.spawn(self._request_snat_block, host, dip)

    def _request_snat_block(self, host: str, dip: str) -> None:
        try:
            result = self.service.propose({"op": "request_snat_block", "host": host,
                                           "dip": dip}, uuid.uuid4().hex)
        except Exception as exc:  # not committed (no quorum, not the leader any more)
            result = {"ok": False, "error": str(exc)}
        with self.lock:
            if result.get("ok"):
                self.held = snat_hold.on_committed(self.held, dip, int(result["generation"]))
                LOG.info("%s: one more SNAT block for %s, held packets wait for it", host, dip)
            else:
                self.held, dropped = snat_hold.on_refused(self.held, dip, time.monotonic())
                self.service.count_snat_hold("dropped", dropped)
                LOG.warning("%s: no SNAT block for %s (%s); %d held packets dropped", host,
                            dip, result.get("error"), dropped)
        self._release_held()

    def _release_held(self) -> None:
        """Send back through their host's pipeline the packets whose block it now holds."""
        with self.lock:
            if not self.held.waits and not self.held.refused_until:
                return
            confirmed = {s.target.node: s.confirmed_generation for s in self.sessions.values()
                         if s.target.role == "host" and s.target.bridge == "int"}
            self.held, release, dropped = snat_hold.due(self.held, confirmed, time.monotonic())
            sent = 0
            for dpid, packet in release:
                session = self.sessions.get(dpid)
                if session is not None:
                    session.datapath.send_msg(ofmsg.packet_out_to_table(
                        session.datapath, packet.in_port, packet.data))
                    sent += 1
        if dropped or len(release) > sent:
            self.service.count_snat_hold("dropped", dropped + len(release) - sent)
        if sent:
            self.service.count_snat_hold("released", sent)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev: Any) -> None:
        with self.lock:
            session = self.sessions.get(ev.msg.datapath.id)
            if session is None or ev.msg.xid != session.barrier_xid:
                return
            session.barrier_xid = None
            if session.errors:
                LOG.error("%s: %d messages refused; will read the switch again",
                          session.target.label, session.errors)
                session.installed, session.resync = None, False
                session.retry_at = time.monotonic() + 1.0
                return
            session.installed = session.staged
            session.confirmed_generation = session.generation
            session.confirmed_at = time.monotonic()
            self.service.record_programmed(session.target.node, session.target.bridge,
                                           session.generation, time.time())
            LOG.debug("%s programmed at generation %d in %.1f ms", session.target.label,
                      session.generation, (time.monotonic() - session.started) * 1000)
            if session.resync:
                session.resync = False
                self._start_sync(session)
            self._hosts_may_follow()
        self._release_held()

    def _hosts_may_follow(self, now: float | None = None) -> None:
        """Start the hosts' syncs held back for new SNAT blocks, once every connected Mux
        confirmed that generation (or after HOSTS_WAIT_LIMIT s: a Mux that is down or stuck
        must not keep the hosts' other changes back). Called with self.lock held."""
        if self.hosts_wait_for is None:
            return
        generation, since = self.hosts_wait_for
        muxes = [s for s in self.sessions.values() if s.target.role == "mux"]
        caught_up = all(s.confirmed_generation >= generation for s in muxes)
        if not caught_up and (now is None or now - since < HOSTS_WAIT_LIMIT):
            return
        if not caught_up:
            LOG.warning("hosts programmed before every Mux confirmed generation %d", generation)
        self.hosts_wait_for = None
        for s in self.sessions.values():
            if s.target.role == "host":
                s.resync = False
                self._start_sync(s)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        target = self.targets.get(msg.datapath.id)
        with self.lock:
            session = self.sessions.get(msg.datapath.id)
            if session is not None and (session.pending or session.barrier_xid is not None):
                session.errors += 1
        LOG.error("switch %s refused a message: type=%d code=%d data=%s",
                  target.label if target else msg.datapath.id, msg.type, msg.code,
                  bytes(msg.data[:64]).hex())
