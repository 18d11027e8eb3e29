"""Every fault scenario of `ananta chaos`, on the lab under load (topologies/chaos.py).

For each: no committed write lost, a clean baseline, no established connection broken where
the backend set is unchanged, the scenario's recovery goal (3 s for a lost Mux), and for a
flood the bystander VIP's success rate. docs/reliability.md has the figures.
"""

from __future__ import annotations

import json

import pytest

from ananta.topologies import chaos

# Goals docs/reliability.md says are not met yet, and the bound that guards against worse.
NOT_MET_YET = {"syn-flood": "p50 latency", "syn-flood-rate-limited": "p50 latency"}
FLOOD_P50_LIMIT = 4.0  # times the p50 before the flood (was 4.1x when SYNs learned entries)


@pytest.mark.parametrize("name", list(chaos.SCENARIOS))
def test_fault_scenario(running_lab: None, name: str) -> None:
    result = chaos.run(name)
    print(json.dumps(result["cost"]))
    cost = result["cost"]
    assert cost["committed_acked"] > 0 and cost["established"] > 0, cost  # the load ran
    unmet = [u for u in result["unmet"] if not u.startswith(NOT_MET_YET.get(name, "\0"))]
    assert unmet == [], (unmet, result["failures"][:10])
    if name in NOT_MET_YET:
        before, during = cost["new_before"]["p50_ms"], cost["new_during"]["p50_ms"]
        assert during <= before * FLOOD_P50_LIMIT, (before, during)
    if name == "mux-kill-during-change":
        # the Mux left has no entries for the lost Mux's connections; hashed again with one
        # backend more, those that now hash to it (about 1 in 4 of them) are reset
        assert cost["established_broken"] <= cost["established"] // 2, cost
