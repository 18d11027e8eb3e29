"""Reconciling a switch: a set difference over cookies, idempotent, learned flows kept."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace

from ananta.controller.compile_mux import compile_mux_int
from ananta.controller.desired import desired_programs
from ananta.controller.flows import (
    Flow,
    FlowKind,
    Output,
    SwitchProgram,
    is_learned,
    is_ours,
    learned_cookie,
    match,
)
from ananta.controller.model import Services
from ananta.controller.reconcile import InstalledFlow, plan, plan_change
from ananta.controller.state import ClusterState, Envelope, apply_command
from tests.unit.fixtures import default_inventory, demo_services


class FakeSwitch:
    """Applies plans the way OVS does: an ADD with an existing key replaces that flow."""

    def __init__(self) -> None:
        self.flows: dict[tuple[int, int, object], InstalledFlow] = {}
        self.groups: dict[int, object] = {}
        self.meters: dict[int, object] = {}

    def installed(self) -> list[InstalledFlow]:
        return list(self.flows.values())

    def apply(self, desired: SwitchProgram) -> int:
        steps = plan(desired, self.installed(), {g: None for g in self.groups},
                     self.meters)  # type: ignore[arg-type]
        for m in (*steps.add_meters, *steps.modify_meters):
            self.meters[m.meter_id] = m
        for mid in steps.delete_meters:
            del self.meters[mid]
        for g in (*steps.add_groups, *steps.modify_groups):
            self.groups[g.group_id] = g
        for f in steps.add_flows:
            self.flows[(f.table, f.priority, f.match)] = InstalledFlow(
                f.table, f.priority, f.cookie, f.match)
        for stale in steps.delete_flows:
            key = (stale.table, stale.priority, stale.match)
            if self.flows.get(key) == stale:
                del self.flows[key]
        for gid in steps.delete_groups:
            del self.groups[gid]
        return len(steps.add_flows) + len(steps.delete_flows) + len(steps.add_groups) + len(
            steps.delete_groups)


def test_plan_then_replan_is_empty_and_matches_desired() -> None:
    desired = compile_mux_int(demo_services(), default_inventory())
    sw = FakeSwitch()
    assert sw.apply(desired) > 0
    assert {f.cookie for f in sw.installed()} == desired.cookies
    steps = plan(desired, sw.installed(), {g: g_obj for g, g_obj in sw.groups.items()},  # type: ignore[misc]
                 sw.meters)  # type: ignore[arg-type]
    assert steps.empty


def test_removing_a_vip_removes_its_flows_and_group_only() -> None:
    inv = default_inventory()
    sw = FakeSwitch()
    sw.apply(compile_mux_int(demo_services(), inv))
    assert sw.groups
    empty = compile_mux_int(Services(), inv)
    assert sw.apply(empty) > 0
    assert not sw.groups
    assert {f.cookie for f in sw.installed()} == empty.cookies  # only the fixed pipeline


def test_changed_flow_is_replaced_in_place_and_foreign_flows_removed() -> None:
    flow = Flow(0, 10, match(in_port=1), (Output(2),), FlowKind.DEFAULT, "x")
    changed = replace(flow, actions=(Output(3),))
    assert flow.cookie != changed.cookie and is_ours(flow.cookie)
    installed = [InstalledFlow(0, 10, flow.cookie, "m"), InstalledFlow(0, 0, 0, "foreign")]
    steps = plan(SwitchProgram(frozenset({changed})), installed, {})
    assert steps.add_flows == (changed,)
    assert {f.cookie for f in steps.delete_flows} == {flow.cookie, 0}


def test_learned_flows_are_never_deleted() -> None:
    learned = InstalledFlow(1, 10, learned_cookie(FlowKind.ROUTER_MAC), "m")
    assert is_learned(learned.cookie) and not is_ours(learned.cookie)
    assert plan(SwitchProgram(), [learned], {}).empty


def test_group_content_change_is_a_modify() -> None:
    inv = default_inventory()
    a = compile_mux_int(demo_services(), inv)
    group = next(iter(a.groups))
    smaller = replace(group, buckets=group.buckets[1:])
    steps = plan(SwitchProgram(a.flows, frozenset({smaller})),
                 [InstalledFlow(f.table, f.priority, f.cookie, None) for f in a.flows],
                 {group.group_id: group})
    assert steps.modify_groups == (smaller,) and not steps.add_groups and not steps.add_flows


def _changes(seed: int, steps: int) -> Iterator[dict[str, SwitchProgram]]:
    """Every switch's program after each of `steps` random config writes (weights, states,
    backends, rate limits, VIPs coming and going), through the replicated state machine."""
    rng = random.Random(seed)
    state = ClusterState()
    inv = default_inventory()

    def run(command: dict[str, object]) -> None:
        apply_command(state, Envelope.model_validate(
            {"op_id": uuid.uuid4().hex, "proposed_at": 0.0, "command": command}))

    run({"op": "set_inventory", "inventory": inv.model_dump(mode="json")})
    dips = [vm.address for h in inv.hosts for vm in h.vms]
    names = [f"v{i}" for i in range(4)]
    for step in range(steps):
        name = rng.choice(names)
        vip = state.vips.get(("default", name))
        if vip is None:
            run({"op": "create_vip", "vip": {
                "name": name, "address": f"203.0.113.{20 + names.index(name)}",
                "endpoints": [{"protocol": "tcp", "port": 80, "backends": [
                    {"address": d, "port": 8080, "weight": rng.choice([50, 100])}
                    for d in rng.sample(dips, rng.randint(1, len(dips)))]}]}})
        elif step % 11 == 0:
            run({"op": "delete_vip", "tenant": "default", "name": name})
        elif step % 5 == 0:
            run({"op": "set_vip_rate_limit", "tenant": "default", "vip": name,
                 "rate_limit_pps": rng.choice([None, 1000, 5000])})
        else:
            be = rng.choice(vip.endpoints[0].backends)
            run({"op": "update_backend", "tenant": "default", "vip": name, "protocol": "tcp",
                 "port": 80, "address": be.address, "weight": rng.randint(0, 300),
                 "state": rng.choice(["active", "active", "draining", "inactive"])})
        yield desired_programs(state.services(), state.inventory, frozenset(state.down),
                               dict(state.snat), dict(state.slot_tables))


def test_planning_from_a_confirmed_program_is_planning_from_its_dump() -> None:
    """plan_change(old, new) is what plan() gives for a switch that reported exactly `old`:
    the same steps (deletions in a fixed order), over a history of random config writes."""
    previous: dict[int, SwitchProgram] = {}
    compared = changed = 0
    for programs in _changes(seed=3, steps=120):
        for dpid, new in programs.items():
            old = previous.get(dpid, SwitchProgram())
            fast = plan_change(old, new)
            full = plan(new, [InstalledFlow(f.table, f.priority, f.cookie, f.match)
                              for f in old.flows],
                        {g.group_id: g for g in old.groups}, {m.meter_id: m for m in old.meters})
            assert fast == replace(full, delete_flows=tuple(sorted(
                full.delete_flows, key=lambda f: (f.table, f.priority, f.cookie))))
            compared += 1
            changed += not fast.empty
        previous = programs
    assert changed > 50 and compared > changed  # writes that change switches, and some not
    same = SwitchProgram(frozenset({Flow(0, 0, match(), (), FlowKind.DEFAULT, "x")}))
    assert plan_change(same, same).empty


def test_a_flow_that_moves_between_parts_stays() -> None:
    """plan_change looks at the changed parts only, but a flow that left one part for another
    is in both programs: nothing to add or delete."""
    a = Flow(0, 10, match(in_port=1), (Output(2),), FlowKind.DEFAULT, "a")
    b = Flow(0, 10, match(in_port=2), (Output(1),), FlowKind.DEFAULT, "b")
    old = SwitchProgram.of_parts({"x": frozenset({a, b}), "y": frozenset()})
    new = SwitchProgram.of_parts({"x": frozenset({a}), "y": frozenset({b})})
    assert old.flows == new.flows and plan_change(old, new).empty
    gone = SwitchProgram.of_parts({"x": frozenset({a}), "y": frozenset()})
    assert plan_change(new, gone).delete_flows == (InstalledFlow(0, 10, b.cookie, b.match),)
