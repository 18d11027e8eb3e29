"""When did each switch reach each config generation (pure).

The leader's os-ken app records, after each barrier, the generation a switch now holds; an
operation of generation g is `programmed` once both bridges of every node it affects hold a
generation >= g, at the latest of those times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

HISTORY = 4096


@dataclass
class ProgrammingLedger:
    # (node, bridge) -> [(generation, time)], generations increasing
    history: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)

    def record(self, node: str, bridge: str, generation: int, when: float) -> None:
        entries = self.history.setdefault((node, bridge), [])
        if entries and entries[-1][0] >= generation:
            return
        entries.append((generation, when))
        del entries[:-HISTORY]

    def reached(self, node: str, bridge: str, generation: int) -> float | None:
        for gen, when in self.history.get((node, bridge), []):
            if gen >= generation:
                return when
        return None

    def latest(self) -> dict[tuple[str, str], int]:
        return {key: entries[-1][0] for key, entries in self.history.items() if entries}

    def programmed_at(self, generation: int, nodes: Iterable[str]) -> float | None:
        times = []
        for node in nodes:
            for bridge in ("int", "phy"):
                when = self.reached(node, bridge, generation)
                if when is None:
                    return None
                times.append(when)
        return max(times, default=None)
