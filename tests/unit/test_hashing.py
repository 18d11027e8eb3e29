"""Consistent hashing: the slot table of new connections (evenness, weights, disruption), its
compilation into a dp_hash group and split flows, and the models of OVS's hashes."""

from __future__ import annotations

import hashlib
import ipaddress
import pickle
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ananta.bridges import INT_PATCH_OFPORT
from ananta.controller.compile_mux import T_SPLIT, chosen_dip, compile_mux_int, endpoint_table
from ananta.controller.flows import FlowKind
from ananta.controller.hashing import (
    BucketSpec,
    best_bucket,
    hash_int,
    packet_values,
    selection_basis,
)
from ananta.controller.model import Endpoint, Inventory, Services, Vip
from ananta.controller.slot_table import (
    BINS,
    SLOTS,
    SUBSLOTS,
    SlotTable,
    bitrev8,
    block_matches,
    decode,
    encode,
    next_table,
    slot_counts,
)
from ananta.controller.state import ClusterState, apply_command
from tests.flowsim import Switch
from tests.unit.test_health import envelope_of, report, seeded

FIELDS = ("ipv4_src", "ipv4_dst", "ip_proto", "tcp_src", "tcp_dst")
VIP = "203.0.113.10"


def test_ovs_hash_method_model_matches_what_ovs_3_1_computed() -> None:
    """Known answers read from `ofproto/trace` on OVS 3.1 (bucket scores it prints) for
    selection_method=hash, which bench/hashing.py measures beside the slot table."""
    basis = selection_basis(packet_values("198.51.100.2", VIP, "tcp", 40000, 80), FIELDS)
    assert hash_int(7, basis) & 0xFFFF == 13393
    assert hash_int(99, basis) & 0xFFFF == 5838
    assert best_bucket((BucketSpec(7, 1), BucketSpec(99, 1)), basis) == 7


# --- the slot table ---------------------------------------------------------------------------

def table_of(weights: dict[str, int], old: SlotTable | None = None) -> SlotTable:
    table = next_table(old, slot_counts(weights))
    assert table is not None
    return table


def moved(a: SlotTable, b: SlotTable) -> int:
    return sum(x != y for x, y in zip(a.expanded(), b.expanded(), strict=True))


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=256))
@settings(max_examples=200, deadline=None)
def test_counts_are_the_weights_share_of_the_slots(weights: list[int]) -> None:
    named = {f"d{i}": w for i, w in enumerate(weights)}
    counts = slot_counts(named)
    if sum(weights) == 0:
        assert counts == {}
        return
    assert sum(counts.values()) == SLOTS
    for name, w in named.items():
        assert (w > 0) == (counts.get(name, 0) > 0)
        assert abs(counts.get(name, 0) - w * SLOTS / sum(weights)) < 2


@given(st.integers(2, 100))
@settings(max_examples=30, deadline=None)
def test_equal_weights_are_even_to_within_a_slot(n: int) -> None:
    table = table_of({f"10.0.{i // 250}.{i % 250}": 100 for i in range(n)})
    counts = table.counts()
    assert max(counts.values()) / (SLOTS / n) <= 1.02
    assert max(counts.values()) - min(counts.values()) <= 1


@given(st.integers(2, 100), st.data())
@settings(max_examples=40, deadline=None)
def test_removing_a_backend_moves_only_its_slots_and_adding_it_back_only_to_it(
        n: int, data: st.DataObject) -> None:
    names = [f"10.0.{i // 250}.{i % 250}" for i in range(n)]
    gone = data.draw(st.sampled_from(names))
    full = table_of(dict.fromkeys(names, 100))
    fewer = table_of({k: 100 for k in names if k != gone}, full)
    changed = [(a, b) for a, b in zip(full.expanded(), fewer.expanded(), strict=True) if a != b]
    assert all(a == gone for a, _ in changed) and len(changed) == full.counts()[gone]
    back = table_of(dict.fromkeys(names, 100), fewer)
    changed = [(a, b) for a, b in zip(fewer.expanded(), back.expanded(), strict=True) if a != b]
    assert all(b == gone for _, b in changed) and len(changed) == back.counts()[gone]
    assert len(changed) / SLOTS <= 1 / n + 0.01


@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 300)), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None)
def test_any_history_moves_only_what_the_counts_ask(changes: list[tuple[int, int]]) -> None:
    """Whatever came before, a change moves exactly the slots some DIP has to give up."""
    weights = {"d0": 100}
    table = table_of(weights)
    for who, w in changes:
        weights[f"d{who}"] = w
        if not any(weights.values()):
            weights["d0"] = 1
        counts = slot_counts(weights)
        new = table_of(weights, table)
        assert new.counts() == counts
        old_counts = table.counts()
        must = sum(max(0, c - counts.get(d, 0)) for d, c in old_counts.items())
        assert moved(table, new) == must
        table = new


def test_every_version_builds_the_same_tables() -> None:
    """Replicas build each endpoint's next table from their own last one, so a Manager
    upgraded in a rolling restart must make the same choices as the one before it: this pins
    them over a fixed history of 300 changes (removals included). Changing the algorithm on
    purpose means a new digest, and an upgrade note (docs/operator-guide.md)."""
    rng = random.Random(2026)
    weights = {f"10.0.0.{i}": 100 for i in range(1, 41)}
    table = None
    digest = hashlib.sha256()
    for _ in range(300):
        dip = f"10.0.0.{rng.randint(1, 50)}"
        weights[dip] = rng.choice([0, 1, 50, 100, 101, 250])
        table = next_table(table, slot_counts(weights))
        assert table is not None
        digest.update(table.encoded().encode())
    assert digest.hexdigest() == (
        "8313ba47017890fe516711bd493006745d1bc1b78d0dba7ba673f137b2873c2f")


def test_the_table_depends_on_the_backends_not_their_order() -> None:
    a = table_of({"10.0.0.1": 100, "10.0.0.2": 200, "10.0.0.3": 100})
    b = table_of({"10.0.0.3": 100, "10.0.0.2": 200, "10.0.0.1": 100})
    assert a == b and hash(a) == hash(b)


def test_block_matches_cover_exactly_a_run() -> None:
    rnd = random.Random(5)
    for _ in range(300):
        start = rnd.randrange(SUBSLOTS)
        length = rnd.randrange(1, SUBSLOTS - start + 1)
        covered = [sub for sub in range(SUBSLOTS) for value, mask in block_matches(9, start,
                                                                                   length)
                   if (9 | sub << 8) & mask == value]
        assert sorted(covered) == sorted(bitrev8(p) for p in range(start, start + length))
        assert len(list(block_matches(9, start, length))) <= 14


def test_a_table_survives_encoding() -> None:
    table = table_of({"10.0.0.1": 100, "10.0.0.2": 301, "10.0.0.3": 7})
    assert any(len(b) > 1 for b in table.bins)
    assert decode(encode(table)) == table
    assert pickle.loads(pickle.dumps(table)) == table


# --- compiled: the dp_hash group and the split table give the oracle's choice ------------------

def endpoint(dips: list[str], weights: list[int]) -> tuple[Vip, Endpoint]:
    ep = Endpoint.model_validate({"protocol": "tcp", "port": 80, "backends": [
        {"address": d, "port": 8080, "weight": w} for d, w in zip(dips, weights, strict=True)]})
    return Vip.model_validate({"name": "v", "address": VIP, "endpoints": [ep]}), ep


def inventory(dips: list[str]) -> Inventory:
    return Inventory.model_validate({
        "vip_pool": ["203.0.113.0/24"], "muxes": [],
        "hosts": [{"name": "hv", "underlay_address": "198.18.0.1",
                   "datapath_ids": {"int": "0000000000000001", "phy": "0000000000000002"},
                   "vms": [{"name": f"vm{i}", "address": d, "mac": f"02:00:00:00:{i // 256:02x}:"
                            f"{i % 256:02x}", "ofport": 10 + i, "gateway": "10.0.0.1"}
                           for i, d in enumerate(dips)]}]})


def random_flows(seed: int, n: int) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    return [(f"198.{rnd.randrange(18, 20)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
             rnd.randrange(1024, 65536)) for _ in range(n)]


def test_the_mux_program_sends_each_new_connection_to_the_oracles_dip() -> None:
    """The compiled group (bucket = dp_hash & 0xff) and split flows (masked dp_hash), run by
    the flow interpreter, agree with the slot table's own lookup, split bins included."""
    dips = [f"10.0.0.{i}" for i in range(1, 8)]
    vip, ep = endpoint(dips, [100, 301, 50, 100, 7, 999, 100])
    table = endpoint_table(vip, ep)
    assert table is not None and sum(len(b) > 1 for b in table.bins) >= 3
    program = compile_mux_int(Services(vips=[vip]), inventory(dips))
    split = [f for f in program.flows if f.table == T_SPLIT and f.priority > 0]
    # their own kind: the Manager's per-VIP counters (endpoint flows) must not sum them in
    assert split and {f.kind for f in split} == {FlowKind.SPLIT_BIN}
    mux = Switch(program)
    seen: Counter[str] = Counter()
    for src, sport in random_flows(11, 3000):
        pkt = {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": src, "ipv4_dst": VIP,
               "tcp_src": sport, "tcp_dst": 80, "tcp_flags": 0x002}
        (_, out), = mux.receive(pkt, INT_PATCH_OFPORT)
        dip = str(ipaddress.IPv4Address(int(out["tunnel_id"])))
        assert dip == chosen_dip(table, src, VIP, "tcp", sport, 80)
        seen[dip] += 1
    assert set(seen) == set(dips)


def test_new_connections_spread_by_weight() -> None:
    """20,000 new connections (a fixed sample) through the oracle: weights 1:2:3 near 1/6,
    2/6, 3/6; ten equal backends within sampling noise."""
    flows = random_flows(7, 20000)
    dips = [f"10.0.0.{i}" for i in range(1, 11)]
    vip, ep = endpoint(dips[:3], [100, 200, 300])
    table = endpoint_table(vip, ep)
    weighted = Counter(chosen_dip(table, src, VIP, "tcp", p, 80) for src, p in flows)
    for dip, w in zip(dips[:3], (1, 2, 3), strict=True):
        assert abs(weighted[dip] / len(flows) - w / 6) <= 0.02
    vip, ep = endpoint(dips, [100] * 10)
    table = endpoint_table(vip, ep)
    even = Counter(chosen_dip(table, src, VIP, "tcp", p, 80) for src, p in flows)
    assert max(even.values()) / (len(flows) / 10) <= 1.11


# --- replicated: the Manager's state keeps each endpoint's table -------------------------------

def test_the_manager_keeps_each_table_and_a_down_backend_moves_only_its_slots() -> None:
    state = seeded()
    (key, before), = state.slot_tables.items()
    assert set(before.counts()) == {"10.1.0.11", "10.1.0.12", "10.2.0.11", "10.2.0.12"}
    assert apply_command(state, envelope_of(report("hv1", "10.1.0.12", False).model_dump(
        mode="json") | {"op": "report_health"}))["ok"]
    during = state.slot_tables[key]
    assert "10.1.0.12" not in during.counts()
    assert moved(before, during) == before.counts()["10.1.0.12"]
    restored = ClusterState()
    restored.__setstate__(state.__getstate__())
    assert restored.slot_tables == state.slot_tables
    assert apply_command(state, envelope_of(report("hv1", "10.1.0.12", True).model_dump(
        mode="json") | {"op": "report_health"}))["ok"]
    assert state.slot_tables[key].counts() == before.counts()
    assert moved(during, state.slot_tables[key]) == before.counts()["10.1.0.12"]


def test_a_deleted_vip_leaves_no_table() -> None:
    state = seeded()
    assert state.slot_tables
    assert apply_command(state, envelope_of({"op": "delete_vip", "tenant": "default",
                                             "name": "web"}))["ok"]
    assert state.slot_tables == {}


def test_bins_and_slots() -> None:
    assert BINS * SUBSLOTS == SLOTS == 65536
