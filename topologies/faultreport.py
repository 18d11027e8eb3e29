"""What a fault cost, from the load generator's and the ledger's records (pure).

Times are wall-clock seconds. A scenario has a fault (`fault_at`), optionally a repair
(`repair_at`), and ends when the load stops (`ended`). For each of the two windows (fault
until repair, repair until the end) the recovery time is how long after the window opened the
last sign of disruption was seen:

- a new connection that failed or took longer than `slow_ms` (a lost SYN retransmits after
  1 s): the time it was started, as that is when the path was broken;
- a pause in a stream or keep-alive answer: the time data flowed again;
- a long-lived connection that failed: when it failed (less the read timeout for a timeout).

`established_broken` counts the long-lived connections that failed after the fault, except on
the `exempt_vms` (a backend the scenario itself kills or removes); those are counted apart. A
long-lived connection that failed before its first answer counts as a failed new connection.
`committed_lost` lists the ledger writes a replica acknowledged that the cluster no longer has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SLOW_MS = 900.0


@dataclass(frozen=True)
class LatencyView:
    attempted: int
    success_rate: float | None
    p50_ms: float | None
    p99_ms: float | None


def latency_view(new: list[tuple[float, float | None, str]]) -> LatencyView:
    ok = sorted(n[1] for n in new if n[1] is not None)
    return LatencyView(
        attempted=len(new),
        success_rate=round(len(ok) / len(new), 4) if new else None,
        p50_ms=round(ok[(len(ok) - 1) // 2], 2) if ok else None,
        p99_ms=round(ok[min(len(ok) - 1, int(len(ok) * 0.99))], 2) if ok else None)


@dataclass(frozen=True)
class FaultCost:
    baseline_failures: int  # failures before the fault: the harness's own noise, should be 0
    established: int  # long-lived connections open when the fault struck
    established_broken: int
    established_broken_exempt: int
    broken_kinds: dict[str, int]
    new_attempted: int
    new_failed: int
    new_slow: int
    recovery_s: float
    repair_recovery_s: float | None
    new_before: LatencyView
    new_during: LatencyView  # new connections started between the fault and the repair
    committed_acked: int
    committed_lost: list[str] = field(default_factory=list)
    longest_write_gap_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _disruptions(load: dict[str, Any], timeout: float) -> list[float]:
    """Times at which the traffic was seen disrupted."""
    times = [start for start, latency, _ in load["new"]
             if latency is None or latency > SLOW_MS]
    times += [s["t"] + s["seconds"] for s in load["stalls"]]
    times += [f["t"] - (timeout if f["kind"] == "timeout" else 0.0)
              for f in load["failures"] if f["what"] != "new"]
    return times


def _recovery(times: Iterable[float], opened: float, closed: float) -> float:
    inside = [t - opened for t in times if opened <= t < closed]
    return round(max(inside), 3) if inside else 0.0


def fault_cost(load: dict[str, Any], fault_at: float, repair_at: float | None,
               exempt_vms: frozenset[str] = frozenset(),
               acked: Iterable[str] = (), present: Iterable[str] = (),
               longest_write_gap_s: float | None = None) -> FaultCost:
    timeout = float(load["settings"]["timeout"])
    ended = float(load["ended"])
    failed_after = [f for f in load["failures"] if f["t"] >= fault_at]
    # a long-lived connection that never got an answer was a new connection that failed
    never_up = [f for f in failed_after if f["what"] != "new" and not f["vm"]]
    long_failed = [f for f in failed_after if f["what"] != "new" and f["vm"]]
    exempt = [f for f in long_failed if f["vm"] in exempt_vms]
    counted = [f for f in long_failed if f["vm"] not in exempt_vms]
    kinds: dict[str, int] = {}
    for f in counted:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    new_after = [n for n in load["new"] if n[0] >= fault_at]
    disruptions = _disruptions(load, timeout)
    present_set, acked_names = set(present), list(acked)
    return FaultCost(
        baseline_failures=len([f for f in load["failures"] if f["t"] < fault_at]),
        established=len([c for c in load["long_lived"]
                         if c["opened"] < fault_at and c.get("closed", ended) >= fault_at]),
        established_broken=len(counted),
        established_broken_exempt=len(exempt),
        broken_kinds=kinds,
        new_attempted=len(new_after),
        new_failed=len([n for n in new_after if n[1] is None]) + len(never_up),
        new_slow=len([n for n in new_after if n[1] is not None and n[1] > SLOW_MS]),
        recovery_s=_recovery(disruptions, fault_at, repair_at if repair_at else ended + 1),
        repair_recovery_s=(_recovery(disruptions, repair_at, ended + 1)
                           if repair_at is not None else None),
        new_before=latency_view([n for n in load["new"] if n[0] < fault_at]),
        new_during=latency_view([n for n in new_after
                                 if n[0] < (repair_at if repair_at is not None else ended)]),
        committed_acked=len(acked_names),
        committed_lost=sorted(name for name in acked_names if name not in present_set),
        longest_write_gap_s=longest_write_gap_s,
    )


NEIGHBOUR_TOLERANCE = 0.05


def unmet_goals(cost: FaultCost, dip_set_unchanged: bool, recovery_goal_s: float | None,
                neighbour_goal: bool = False) -> list[str]:
    """The goals of ../shared/design/TARGETS.md (Reliability) this run missed, in words."""
    unmet = []
    if cost.committed_lost:
        unmet.append(f"{len(cost.committed_lost)} committed writes lost")
    if cost.baseline_failures:
        unmet.append(f"{cost.baseline_failures} failures before the fault (the lab was unwell)")
    if dip_set_unchanged and cost.established_broken:
        unmet.append(f"{cost.established_broken} established connections broken "
                     f"({cost.broken_kinds}) with the backend set unchanged")
    if recovery_goal_s is not None and cost.recovery_s > recovery_goal_s:
        unmet.append(f"recovery {cost.recovery_s} s > {recovery_goal_s} s")
    before, during = cost.new_before, cost.new_during
    if neighbour_goal and before.success_rate is not None and during.success_rate is not None:
        if during.success_rate < before.success_rate * (1 - NEIGHBOUR_TOLERANCE):
            unmet.append(f"success rate {during.success_rate:.1%} under the fault, "
                         f"{before.success_rate:.1%} before")
        if (before.p50_ms is not None and during.p50_ms is not None
                and during.p50_ms > before.p50_ms * (1 + NEIGHBOUR_TOLERANCE)):
            unmet.append(f"p50 latency {during.p50_ms} ms under the fault, "
                         f"{before.p50_ms} ms before")
    return unmet


def table_row(result: dict[str, Any]) -> str:
    """One scenario's line of docs/reliability.md's table."""
    c = result["cost"]
    rec = f"{c['recovery_s']:.2f}"
    if c["repair_recovery_s"]:
        rec += f" / {c['repair_recovery_s']:.2f}"
    broken = f"{c['established_broken']} of {c['established']}"
    if c["established_broken_exempt"]:
        broken += f" (+{c['established_broken_exempt']} on the faulted backend)"
    during = c["new_during"]
    latency = (f"{c['new_before']['p50_ms']} -> {during['p50_ms']}"
               if during["p50_ms"] is not None else "-")
    verdict = "met" if not result["unmet"] else "NOT met: " + "; ".join(result["unmet"])
    return (f"| `{result['scenario']}` | {rec} | {broken} | {c['new_failed']} of "
            f"{c['new_attempted']} ({c['new_slow']} slow) | {latency} | "
            f"{len(c['committed_lost'])} of {c['committed_acked']} | "
            f"{c['longest_write_gap_s']} | {verdict} |")


TABLE_HEAD = (
    "| scenario | recovery s (fault / repair) | established broken | new connections failed "
    "| new p50 ms before -> during | commits lost | longest write gap s | goals |\n"
    "|---|---|---|---|---|---|---|---|")


def render_table(results: list[dict[str, Any]]) -> str:
    return "\n".join([TABLE_HEAD, *(table_row(r) for r in results)])


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the marker lines `begin` and `end` replaced."""
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"markers {begin!r} and {end!r} not found")
    return f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"
