"""SNAT port blocks in the replicated state: allocation, alignment, release, conflicts."""

from __future__ import annotations

import copy
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ananta.controller.model import Inventory
from ananta.controller.snat import (
    BLOCK_SIZE,
    MAX_BLOCKS_PER_DIP,
    SNAT_PORT_MIN,
    first_free_block,
    range_bins,
)
from ananta.controller.state import ClusterState, Envelope, apply_command

VIP = "203.0.113.10"
DIPS = [f"10.1.{i // 200}.{10 + i % 200}" for i in range(40)]


def inventory() -> Inventory:
    return Inventory.model_validate({
        "vip_pool": ["203.0.113.0/24"], "muxes": [],
        "hosts": [{"name": "hv1", "underlay_address": "198.18.0.1",
                   "datapath_ids": {"int": "0000000000000001", "phy": "0000000000000002"},
                   "vms": [{"name": f"vm{i}", "address": d, "mac": f"02:00:00:00:00:{i:02x}",
                            "ofport": 10 + i, "gateway": "10.1.0.1"}
                           for i, d in enumerate(DIPS)]}]})


def run(state: ClusterState, command: dict) -> dict:  # type: ignore[type-arg]
    return apply_command(state, Envelope.model_validate(
        {"op_id": uuid.uuid4().hex, "proposed_at": 1.0, "command": command}))


def vip(name: str, address: str, dips: list[str], port: int = 80) -> dict:  # type: ignore[type-arg]
    return {"name": name, "tenant": "default", "address": address, "endpoints": [
        {"protocol": "tcp", "port": port, "backends": [
            {"address": d, "port": 8080} for d in dips]}]}


def fresh() -> ClusterState:
    state = ClusterState()
    assert run(state, {"op": "set_inventory", "inventory": inventory().model_dump(mode="json")})
    return state


def check_invariants(state: ClusterState) -> None:
    seen: dict[str, list[tuple[int, int]]] = {}
    for dip, blocks in state.snat.items():
        assert len(blocks) == 1
        for b in blocks:
            assert b.dip == dip and b.size == BLOCK_SIZE and b.start % b.size == 0
            assert b.start >= SNAT_PORT_MIN and b.end <= 65535
            assert dip in {be.address for v in state.vips.values() if v.address == b.vip
                           for ep in v.endpoints for be in ep.backends}
            seen.setdefault(b.vip, []).append((b.start, b.end))
    for ranges in seen.values():
        ranges.sort()
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    backends = {be.address for v in state.vips.values() for ep in v.endpoints
                for be in ep.backends}
    assert set(state.snat) == backends  # room for all here: every backend has its block
    assert state.snat_used == {v: {b.start for bs in state.snat.values() for b in bs
                                   if b.vip == v} for v in state.snat_used} | {}


def test_every_backend_gets_an_aligned_block_of_its_vip() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:4])})["ok"]
    starts = sorted(b.start for bs in state.snat.values() for b in bs)
    assert starts == [4096, 8192, 12288, 16384]  # each with room to grow in one range
    check_invariants(state)


def test_a_removed_backend_gives_its_block_back_and_the_next_gets_it() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:3])})["ok"]
    freed = state.snat[DIPS[1]][0].start
    assert run(state, {"op": "remove_backend", "tenant": "default", "vip": "web",
                       "protocol": "tcp", "port": 80, "address": DIPS[1]})["ok"]
    assert DIPS[1] not in state.snat
    assert run(state, {"op": "add_backend", "tenant": "default", "vip": "web", "protocol": "tcp",
                       "port": 80, "backend": {"address": DIPS[5], "port": 8080}})["ok"]
    assert state.snat[DIPS[5]][0].start == freed
    check_invariants(state)


def test_a_dip_of_two_vips_keeps_its_block_and_moves_when_it_leaves_that_vip() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("a", VIP, DIPS[:2])})["ok"]
    before = state.snat[DIPS[0]]
    assert run(state, {"op": "create_vip", "vip": vip("b", "203.0.113.11", DIPS[:1])})["ok"]
    assert state.snat[DIPS[0]] == before
    assert run(state, {"op": "delete_vip", "tenant": "default", "name": "a"})["ok"]
    assert state.snat[DIPS[0]][0].vip == "203.0.113.11"
    check_invariants(state)


def test_an_endpoint_on_a_snat_port_is_refused_and_changes_nothing() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:2])})["ok"]
    snapshot = copy.deepcopy(state.__getstate__())
    result = run(state, {"op": "add_endpoint", "tenant": "default", "vip": "web", "endpoint": {
        "protocol": "udp", "port": 4100, "backends": [{"address": DIPS[0], "port": 53}]}})
    assert result["status"] == 409 and "SNAT" in result["error"], result
    assert result["path"] == "endpoints[1].port"
    assert state.__getstate__() == snapshot


def test_blocks_avoid_the_vips_ports_and_run_out_cleanly() -> None:
    assert first_free_block([], [1024, 1300]) == 4096  # a first block: room to grow
    assert first_free_block(range(4096, 65536, 4096), []) == 1024  # no room left: any free
    assert first_free_block([], [1024, 1300], after=1024) == 1536  # an extra: the next free
    assert first_free_block([1024], [], after=1024) == 1280  # adjacent when free
    assert range_bins([(1024, 2047), (4096, 4351)]) == [0] * 13 + [1] * 3
    assert range_bins([(1024, 1279)] * 3) == [0] * 6 + [1] * 5 + [2] * 5
    everything = range(SNAT_PORT_MIN, 65536, BLOCK_SIZE)
    assert first_free_block(everything, []) is None
    assert len(everything) == 252


def test_a_snapshot_restores_the_blocks() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:4])})["ok"]
    restored = ClusterState()
    restored.__setstate__(copy.deepcopy(state.__getstate__()))
    assert restored.snat == state.snat and restored.snat_used == state.snat_used
    assert restored.dip_vips == state.dip_vips


@given(st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 39)),
                max_size=60))
@settings(max_examples=60, deadline=None)
def test_blocks_never_overlap_whatever_the_changes(steps: list[tuple[str, int]]) -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:1])})["ok"]
    for action, i in steps:
        if action == "add":
            run(state, {"op": "add_backend", "tenant": "default", "vip": "web",
                        "protocol": "tcp", "port": 80,
                        "backend": {"address": DIPS[i], "port": 8080}})
        else:
            run(state, {"op": "remove_backend", "tenant": "default", "vip": "web",
                        "protocol": "tcp", "port": 80, "address": DIPS[i]})
        check_invariants(state)


def test_a_host_agent_gets_adjacent_blocks_up_to_the_cap_and_gives_them_back() -> None:
    state = fresh()
    assert run(state, {"op": "create_vip", "vip": vip("web", VIP, DIPS[:2])})["ok"]
    first = state.snat[DIPS[0]][0]
    req = {"op": "request_snat_block", "host": "hv1", "dip": DIPS[0]}
    assert run(state, req)["ok"]
    second = state.snat[DIPS[0]][1]
    # DIPS[1] holds first.start + 256, so the next free one comes after it
    assert second.start not in (first.start, state.snat[DIPS[1]][0].start)
    assert run(state, req)["ok"]
    assert state.snat[DIPS[0]][2].start == second.start + 256  # adjacent when free: one range
    check_blocks = [b for bs in state.snat.values() for b in bs]
    assert len({(b.vip, b.start) for b in check_blocks}) == len(check_blocks)
    assert run(state, {**req, "host": "hv9"})["status"] == 404
    other = run(state, {**req, "dip": "10.9.9.9"})
    assert other["status"] == 403 and other["path"] == "dip"
    while len(state.snat[DIPS[0]]) < MAX_BLOCKS_PER_DIP:
        assert run(state, req)["ok"]
    capped = run(state, req)
    assert capped["status"] == 429 and "most" in capped["error"]
    release = {"op": "release_snat_block", "host": "hv1", "dip": DIPS[0]}
    assert run(state, {**release, "start": second.start})["ok"]
    assert second not in state.snat[DIPS[0]] and second.start not in state.snat_used[VIP]
    assert run(state, {**release, "start": 1})["status"] == 404
    while len(state.snat[DIPS[0]]) > 1:
        assert run(state, {**release, "start": state.snat[DIPS[0]][-1].start})["ok"]
    last = run(state, {**release, "start": first.start})
    assert last["status"] == 409  # a DIP keeps its last block
