"""Plan how to bring a switch from what it has to what it should have (pure).

Flows are compared by cookie (which fingerprints content, see flows.py); groups by id, with
the content last sent on this connection when known. `plan` works from what a switch
reported (a full dump); `plan_change` from the program a switch last confirmed, in set
differences between two programs, which share most of their Flow objects (the compilers
cache them), so a config write costs each switch in proportion to what changed.

The plan is ordered so that no packet meets a half-made pipeline: groups and meters first,
then new flows (an ADD with an existing table/priority/match replaces the old flow in
place), then the stale flows, then stale groups and meters.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ananta.controller.flows import Flow, Group, Meter, SwitchProgram, is_learned, is_lease


@dataclass(frozen=True)
class InstalledFlow:
    table: int
    priority: int
    cookie: int
    match: Any  # as the switch reported it; handed back verbatim to delete it


@dataclass(frozen=True)
class Plan:
    add_groups: tuple[Group, ...] = ()
    modify_groups: tuple[Group, ...] = ()
    add_flows: tuple[Flow, ...] = ()
    delete_flows: tuple[InstalledFlow, ...] = ()
    delete_groups: tuple[int, ...] = ()
    add_meters: tuple[Meter, ...] = ()
    modify_meters: tuple[Meter, ...] = ()
    delete_meters: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add_groups or self.modify_groups or self.add_flows
                    or self.delete_flows or self.delete_groups or self.add_meters
                    or self.modify_meters or self.delete_meters)


def plan(
    desired: SwitchProgram,
    installed_flows: Iterable[InstalledFlow],
    installed_groups: Mapping[int, Group | None],
    installed_meters: Mapping[int, Meter | None] | None = None,
) -> Plan:
    """`installed_groups` (`installed_meters`) maps each group (meter) id on the switch to
    its known content, or None."""
    installed = list(installed_flows)
    have = {f.cookie for f in installed}
    want = desired.cookies
    add_flows = tuple(sorted((f for f in desired.flows if f.cookie not in have),
                             key=lambda f: (f.table, -f.priority, f.cookie)))
    delete_flows = tuple(f for f in installed if f.cookie not in want
                         and not is_learned(f.cookie) and not is_lease(f.cookie))
    add_groups, modify_groups = [], []
    for group in sorted(desired.groups, key=lambda g: g.group_id):
        if group.group_id not in installed_groups:
            add_groups.append(group)
        elif installed_groups[group.group_id] != group:
            modify_groups.append(group)
    wanted_ids = {g.group_id for g in desired.groups}
    delete_groups = tuple(sorted(gid for gid in installed_groups if gid not in wanted_ids))
    have_meters = installed_meters or {}
    add_meters = tuple(m for m in sorted(desired.meters, key=lambda m: m.meter_id)
                       if m.meter_id not in have_meters)
    modify_meters = tuple(m for m in sorted(desired.meters, key=lambda m: m.meter_id)
                          if m.meter_id in have_meters and have_meters[m.meter_id] != m)
    wanted_meters = {m.meter_id for m in desired.meters}
    delete_meters = tuple(sorted(mid for mid in have_meters if mid not in wanted_meters))
    return Plan(tuple(add_groups), tuple(modify_groups), add_flows, delete_flows, delete_groups,
                add_meters, modify_meters, delete_meters)


EMPTY_PLAN = Plan()
_GROUP_ID = operator.attrgetter("group_id")
_METER_ID = operator.attrgetter("meter_id")


def plan_change(old: SwitchProgram, new: SwitchProgram) -> Plan:
    """The plan from a switch that holds `old` (a program it confirmed, with no error) to
    `new`: what `plan(new, old's flows, groups and meters)` gives (delete_flows in table,
    priority, cookie order), without looking at the flows both have."""
    if old is new:
        return EMPTY_PLAN
    if old.parts is not None and new.parts is not None:
        # only the parts that are not the very same objects can hold a difference (a flow
        # that moved between parts is in both programs: the differences are program-wide)
        added = frozenset().union(*(p for k, p in new.parts.items()
                                    if old.parts.get(k) is not p)) - old.flows
        removed = frozenset().union(*(p for k, p in old.parts.items()
                                      if new.parts.get(k) is not p)) - new.flows
    else:
        added, removed = new.flows - old.flows, old.flows - new.flows
    add_flows = tuple(sorted(added, key=lambda f: (f.table, -f.priority, f.cookie)))
    delete_flows = tuple(InstalledFlow(f.table, f.priority, f.cookie, f.match)
                         for f in sorted(removed, key=lambda f: (f.table, f.priority, f.cookie)))
    old_groups = set(map(_GROUP_ID, old.groups))
    new_groups = set(map(_GROUP_ID, new.groups))
    changed = sorted(new.groups - old.groups, key=_GROUP_ID)
    old_meters = set(map(_METER_ID, old.meters))
    new_meters = set(map(_METER_ID, new.meters))
    changed_meters = sorted(new.meters - old.meters, key=_METER_ID)
    return Plan(
        add_groups=tuple(g for g in changed if g.group_id not in old_groups),
        modify_groups=tuple(g for g in changed if g.group_id in old_groups),
        add_flows=add_flows,
        delete_flows=delete_flows,
        delete_groups=tuple(sorted(old_groups - new_groups)),
        add_meters=tuple(m for m in changed_meters if m.meter_id not in old_meters),
        modify_meters=tuple(m for m in changed_meters if m.meter_id in old_meters),
        delete_meters=tuple(sorted(old_meters - new_meters)),
    )
