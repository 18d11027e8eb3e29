"""What a fault cost: the arithmetic behind `ananta chaos` (topologies/faultreport.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ananta.topologies.faultreport import (
    TABLE_HEAD,
    fault_cost,
    render_table,
    replace_between,
    table_row,
    unmet_goals,
)

FAULT, REPAIR, END = 100.0, 106.0, 115.0


def load(failures: Sequence[dict[str, Any]] = (), stalls: Sequence[dict[str, Any]] = (),
         new: Sequence[tuple[float, float | None, str]] = ()) -> dict[str, Any]:
    return {"settings": {"timeout": 10.0}, "started": 90.0, "ended": END,
            "failures": list(failures), "stalls": list(stalls), "new": list(new),
            "long_lived": [{"id": "ka0.0", "opened": 91.0, "closed": END},
                           {"id": "st0.0", "opened": 91.0, "closed": END},
                           {"id": "ka1.1", "opened": 108.0, "closed": END}]}


def failure(t: float, what: str, kind: str, vm: str = "vm1") -> dict[str, Any]:
    return {"t": t, "what": what, "id": "x", "kind": kind, "vm": vm, "detail": ""}


def test_a_quiet_run_costs_nothing_and_meets_every_goal() -> None:
    cost = fault_cost(load(new=[(95.0, 3.0, "vm1"), (101.0, 2.5, "vm2")]), FAULT, REPAIR,
                      acked=["a", "b"], present=["a", "b", "c"])
    assert (cost.recovery_s, cost.repair_recovery_s, cost.established) == (0.0, 0.0, 2)
    assert (cost.new_attempted, cost.new_failed, cost.committed_lost) == (1, 0, [])
    assert unmet_goals(cost, True, 3.0) == []


def test_recovery_is_the_last_disruption_of_each_window() -> None:
    cost = fault_cost(load(
        new=[(100.5, None, "timeout"), (101.0, 1500.0, "vm2"), (102.0, 3.0, "vm1"),
             (107.0, None, "refused")],
        stalls=[{"t": 100.2, "what": "stream", "id": "s", "seconds": 2.8, "vm": "vm3"}]),
        FAULT, REPAIR)
    assert cost.recovery_s == 3.0  # the stall ended at 103.0
    assert cost.repair_recovery_s == 1.0
    assert (cost.new_failed, cost.new_slow) == (2, 1)


def test_a_timed_out_connection_counts_from_when_it_went_quiet() -> None:
    cost = fault_cost(load(failures=[failure(112.0, "stream", "timeout")]), FAULT, None)
    assert cost.recovery_s == 2.0 and cost.repair_recovery_s is None


def test_broken_connections_on_the_faulted_backend_are_counted_apart() -> None:
    cost = fault_cost(load(failures=[failure(101.0, "keepalive", "reset", "vm4"),
                                     failure(101.5, "stream", "reset", "vm1"),
                                     failure(102.0, "new", "refused", "")]),
                      FAULT, REPAIR, exempt_vms=frozenset({"vm4"}))
    assert (cost.established_broken, cost.established_broken_exempt) == (1, 1)
    assert cost.broken_kinds == {"reset": 1}
    assert unmet_goals(cost, False, None) == []
    assert unmet_goals(cost, True, None) == [
        "1 established connections broken ({'reset': 1}) with the backend set unchanged"]


def test_lost_commits_and_a_sick_baseline_are_goals_missed() -> None:
    cost = fault_cost(load(failures=[failure(95.0, "new", "timeout", "")]), FAULT, REPAIR,
                      acked=["t-1", "t-2", "t-3"], present=["t-1", "t-3"])
    assert cost.committed_lost == ["t-2"] and cost.baseline_failures == 1
    assert unmet_goals(cost, True, None) == [
        "1 committed writes lost", "1 failures before the fault (the lab was unwell)"]


def test_slow_recovery_is_a_goal_missed() -> None:
    cost = fault_cost(load(new=[(103.5, None, "timeout")]), FAULT, REPAIR)
    assert unmet_goals(cost, True, 3.0) == ["recovery 3.5 s > 3.0 s"]


def test_a_long_lived_connection_that_never_got_an_answer_is_a_failed_new_one() -> None:
    cost = fault_cost(load(failures=[failure(101.0, "keepalive", "refused", "")]), FAULT, REPAIR)
    assert (cost.established_broken, cost.new_failed) == (0, 1)


def test_a_bystander_vip_must_keep_its_success_rate_and_latency() -> None:
    before = [(90.0 + i / 10, 2.0, "vm1") for i in range(50)]
    steady = fault_cost(load(new=before + [(101.0 + i / 10, 2.05, "vm1") for i in range(40)]),
                        FAULT, REPAIR)
    assert steady.new_before.p50_ms == 2.0 and steady.new_during.p50_ms == 2.05
    assert unmet_goals(steady, True, None, neighbour_goal=True) == []
    hurt = fault_cost(load(new=before + [(101.0 + i / 10, 3.0 if i % 2 else None, "vm1")
                                         for i in range(40)]), FAULT, REPAIR)
    assert hurt.new_during.success_rate == 0.5
    assert unmet_goals(hurt, True, None, neighbour_goal=True) == [
        "success rate 50.0% under the fault, 100.0% before",
        "p50 latency 3.0 ms under the fault, 2.0 ms before"]


def test_a_scenario_renders_as_one_table_row() -> None:
    cost = fault_cost(load(new=[(95.0, 2.0, "vm1"), (101.0, 1500.0, "vm2")],
                           failures=[failure(101.0, "keepalive", "reset", "vm4")]),
                      FAULT, REPAIR, exempt_vms=frozenset({"vm4"}), acked=["a"], present=["a"],
                      longest_write_gap_s=0.25)
    row = table_row({"scenario": "backend-vm-kill", "cost": cost.as_dict(), "unmet": []})
    assert row == ("| `backend-vm-kill` | 1.00 | 0 of 2 (+1 on the faulted backend) | 0 of 1 "
                   "(1 slow) | 2.0 -> 1500.0 | 0 of 1 | 0.25 | met |")
    assert render_table([]) == TABLE_HEAD


def test_the_table_replaces_what_lies_between_its_markers() -> None:
    text = "intro\n<!-- b -->\nold\n<!-- e -->\nend\n"
    assert replace_between(text, "<!-- b -->", "<!-- e -->", "new") == (
        "intro\n<!-- b -->\nnew\n<!-- e -->\nend\n")
