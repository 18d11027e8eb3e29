"""Consistent hashing: the model of OVS's select group, and the weight -> bucket scheme."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ananta.controller.compile_mux import chosen_dip, endpoint_group
from ananta.controller.flows import stable_id
from ananta.controller.hashing import (
    MAX_BUCKETS,
    BucketSpec,
    best_bucket,
    bucket_counts,
    hash_int,
    packet_values,
    selection_basis,
    unit_bucket_ids,
)
from ananta.controller.model import Endpoint, Inventory, Vip

FIELDS = ("ipv4_src", "ipv4_dst", "ip_proto", "tcp_src", "tcp_dst")
VIP = "203.0.113.10"


def test_matches_what_ovs_3_1_computed() -> None:
    """Known answers read from `ofproto/trace` on OVS 3.1 (bucket scores it prints)."""
    basis = selection_basis(packet_values("198.51.100.2", VIP, "tcp", 40000, 80), FIELDS)
    assert hash_int(7, basis) & 0xFFFF == 13393
    assert hash_int(99, basis) & 0xFFFF == 5838
    assert best_bucket((BucketSpec(7, 1), BucketSpec(99, 1)), basis) == 7


def test_ties_go_to_the_last_bucket_like_ovs() -> None:
    assert best_bucket((BucketSpec(5, 0), BucketSpec(6, 0)), 1234) == 6
    assert best_bucket((), 1234) is None


def test_equal_weights_get_one_bucket_each() -> None:
    assert bucket_counts({f"10.0.0.{i}": 100 for i in range(1, 101)}) == {
        f"10.0.0.{i}": 1 for i in range(1, 101)}


def test_weight_zero_gets_no_bucket() -> None:
    assert bucket_counts({"a": 0, "b": 300, "c": 100}) == {"b": 3, "c": 1}
    assert bucket_counts({"a": 0}) == {}


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=256))
@settings(max_examples=300, deadline=None)
def test_bucket_shares_are_within_a_fraction_of_a_point_of_the_weights(weights: list[int]) -> None:
    named = {f"d{i}": w for i, w in enumerate(weights)}
    counts = bucket_counts(named)
    total_w = sum(weights)
    if total_w == 0:
        assert counts == {}
        return
    assert sum(counts.values()) <= MAX_BUCKETS + len(weights)
    total = sum(counts.values())
    for name, w in named.items():
        share = counts.get(name, 0) / total
        assert abs(share - w / total_w) <= 0.02, (name, w, counts.get(name))
        assert (w > 0) == (name in counts)


@given(st.sets(st.integers(1, 2**32 - 2), min_size=1, max_size=60))
def test_bucket_ids_are_distinct_and_stable(dips: set[int]) -> None:
    counts = {str(d): 1 + d % 3 for d in dips}
    ids = unit_bucket_ids(counts, stable_id)
    flat = [b for v in ids.values() for b in v]
    assert len(flat) == len(set(flat)) == sum(counts.values())
    assert all(0 < b < 0xFFFFFF00 for b in flat)


def endpoint(dips: list[str], weights: list[int] | None = None) -> tuple[Vip, Endpoint]:
    ws = weights or [100] * len(dips)
    ep = Endpoint.model_validate({"protocol": "tcp", "port": 80, "backends": [
        {"address": d, "port": 8080, "weight": w} for d, w in zip(dips, ws, strict=True)]})
    return Vip.model_validate({"name": "v", "address": VIP, "endpoints": [ep]}), ep


def inventory(dips: list[str]) -> Inventory:
    return Inventory.model_validate({
        "vip_pool": ["203.0.113.0/24"], "muxes": [],
        "hosts": [{"name": "hv", "underlay_address": "198.18.0.1",
                   "datapath_ids": {"int": "0000000000000001", "phy": "0000000000000002"},
                   "vms": [{"name": f"vm{i}", "address": d, "mac": f"02:00:00:00:{i // 256:02x}:"
                            f"{i % 256:02x}", "ofport": 10 + i, "gateway": "10.0.0.1"}
                           for i, d in enumerate(dips)]}]})


def dips_of(n: int) -> list[str]:
    return [f"10.{i // 250}.{i % 250}.7" for i in range(n)]


def choices(dips: list[str], inv: Inventory, flows: list[tuple[str, int]],
            weights: list[int] | None = None) -> list[str | None]:
    vip, ep = endpoint(dips, weights)
    group = endpoint_group(vip, ep, inv)
    return [chosen_dip(group, src, VIP, "tcp", sport, 80) for src, sport in flows]


def random_flows(seed: int, n: int) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    return [(f"198.{rnd.randrange(18, 20)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
             rnd.randrange(1024, 65536)) for _ in range(n)]


@given(st.integers(2, 60), st.data())
@settings(max_examples=40, deadline=None)
def test_removing_a_backend_moves_only_its_connections(n: int, data: st.DataObject) -> None:
    dips = dips_of(n)
    gone = data.draw(st.sampled_from(dips))
    inv = inventory(dips)
    flows = random_flows(data.draw(st.integers(0, 2**16)), 300)
    before = choices(dips, inv, flows)
    after = choices([d for d in dips if d != gone], inv, flows)
    for b, a in zip(before, after, strict=True):
        assert b in (a, gone)


@given(st.integers(1, 60), st.data())
@settings(max_examples=40, deadline=None)
def test_adding_a_backend_moves_connections_only_to_it(n: int, data: st.DataObject) -> None:
    dips = dips_of(n + 1)
    inv = inventory(dips)
    flows = random_flows(data.draw(st.integers(0, 2**16)), 300)
    before = choices(dips[:-1], inv, flows)
    after = choices(dips, inv, flows)
    for b, a in zip(before, after, strict=True):
        assert b == a or a == dips[-1]


def test_new_connections_spread_evenly_and_by_weight() -> None:
    """20,000 new connections (a fixed sample): equal weights within sampling noise (5 sigma),
    weights 1:2:3 near 1/6, 2/6, 3/6."""
    dips = dips_of(10)
    inv = inventory(dips)
    flows = random_flows(7, 20000)
    even = Counter(choices(dips, inv, flows))
    assert set(even) == set(dips)
    assert max(even.values()) / (len(flows) / 10) <= 1.11
    weighted = Counter(choices(dips[:3], inv, flows, [100, 200, 300]))
    for dip, w in zip(dips[:3], (1, 2, 3), strict=True):
        assert abs(weighted[dip] / len(flows) - w / 6) <= 0.02


def test_every_mux_computes_the_same_choice() -> None:
    """The choice depends only on the group (sorted buckets) and the packet, not on the order
    in which backends were listed."""
    dips = dips_of(8)
    inv = inventory(dips)
    flows = random_flows(3, 200)
    assert choices(dips, inv, flows) == choices(list(reversed(dips)), inv, flows)
