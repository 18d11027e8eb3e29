"""The health of one backend as its host agent sees it: a small state machine (pure).

A backend comes up after `rise` good probes in a row and goes down after `fall` bad ones
(ExaBGP's healthcheck helper is the model). Before either has happened it has no settled
opinion. The agent reports every change of settled opinion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["init", "rising", "up", "falling", "down"]


@dataclass(frozen=True)
class ProbeState:
    settled: bool | None = None  # True up, False down, None not yet known
    good: int = 0  # good probes in a row
    bad: int = 0  # bad probes in a row

    @property
    def status(self) -> Status:
        if self.settled is None:
            return "init"
        if self.settled:
            return "falling" if self.bad else "up"
        return "rising" if self.good else "down"


def step(state: ProbeState, ok: bool, rise: int, fall: int) -> ProbeState:
    good, bad = (state.good + 1, 0) if ok else (0, state.bad + 1)
    settled = state.settled
    if good >= rise:
        settled = True
    elif bad >= fall:
        settled = False
    return ProbeState(settled, good, bad)
