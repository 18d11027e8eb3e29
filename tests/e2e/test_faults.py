"""Every fault scenario of `ananta chaos`, on the lab under load (topologies/chaos.py).

For each: no committed write lost, a clean baseline, no established connection broken where
the backend set is unchanged, the scenario's recovery goal (3 s for a lost Mux), and for a
flood the bystander VIP's success rate. docs/reliability.md has the figures.
"""

from __future__ import annotations

import json

import pytest

from ananta.topologies import chaos

# Goals docs/reliability.md says are not met yet (the figures are in bench/, not asserted)
NOT_MET_YET = {"syn-flood": "p50 latency", "syn-flood-rate-limited": "p50 latency"}


@pytest.mark.parametrize("name", list(chaos.SCENARIOS))
def test_fault_scenario(running_lab: None, name: str) -> None:
    result = chaos.run(name)
    print(json.dumps(result["cost"]))
    cost = result["cost"]
    assert cost["committed_acked"] > 0 and cost["established"] > 0, cost  # the load ran
    unmet = [u for u in result["unmet"] if not u.startswith(NOT_MET_YET.get(name, "\0"))]
    assert unmet == [], (unmet, result["failures"][:10])
    if name == "mux-kill-during-change":
        # the Mux left has no entries for the lost Mux's connections; hashed again with one
        # backend more, those that now hash to it (about 1 in 4 of them) are reset
        assert cost["established_broken"] <= cost["established"] // 2, cost
