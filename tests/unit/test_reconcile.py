"""Reconciling a switch: a set difference over cookies, idempotent, learned flows kept."""

from __future__ import annotations

from dataclasses import replace

from ananta.controller.compile_mux import compile_mux_int
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
from ananta.controller.reconcile import InstalledFlow, plan
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
