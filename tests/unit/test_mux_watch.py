"""What the leader makes of the Muxes' counters: drain completion and /metrics samples."""

from __future__ import annotations

from ananta.controller.flows import FlowKind
from ananta.controller.mux_watch import (
    DRAIN_QUIET,
    FRAGMENT_METER_OWNER,
    FRAGMENT_METRIC,
    METER_DROPS,
    MuxWatch,
    counter_samples,
)

STEER, ENDPOINT, NO_ENDPOINT = (int(FlowKind.VIP_STEER), int(FlowKind.VIP_ENDPOINT),
                                int(FlowKind.VIP_NO_ENDPOINT))


def test_a_draining_mux_is_drained_once_its_vip_traffic_stops() -> None:
    watch = MuxWatch()
    watch.record_counters("mux1", "phy", {(STEER, "203.0.113.10"): (100, 9000)}, now=0.0)
    assert watch.drained("mux1") is None  # not draining
    watch.record_lease("mux1", True, now=1.0)
    watch.record_counters("mux1", "phy", {(STEER, "203.0.113.10"): (150, 9000)}, now=1.5)
    watch.record_counters("mux1", "phy", {(STEER, "203.0.113.10"): (150, 9000)}, now=2.5)
    assert watch.drained("mux1") is False  # quiet for 1 s only
    watch.record_counters("mux1", "phy", {(STEER, "203.0.113.10"): (150, 9000)},
                          now=1.5 + DRAIN_QUIET)
    assert watch.drained("mux1") is True
    watch.record_counters("mux1", "phy", {(STEER, "203.0.113.10"): (151, 9000)}, now=4.0)
    assert watch.drained("mux1") is False  # a router still sends
    watch.record_lease("mux1", False, now=5.0)
    assert watch.drained("mux1") is None


def test_counters_become_per_vip_and_per_endpoint_samples() -> None:
    samples = counter_samples({
        ("mux1", "phy"): {(STEER, "203.0.113.10"): (10, 1000)},
        ("mux1", "meters"): {(METER_DROPS, "203.0.113.10"): (4, 0)},
        ("mux1", "int"): {(ENDPOINT, "203.0.113.10:tcp:80"): (9, 900),
                          (ENDPOINT, "select:203.0.113.10:tcp:80"): (3, 180),
                          (NO_ENDPOINT, "203.0.113.10"): (1, 60)},
    })
    flat = {(name, tuple(sorted(labels.items()))): v
            for (name, _, _), rows in samples.items() for labels, v in rows}
    assert flat == {
        ("ananta_vip_packets", (("mux", "mux1"), ("vip", "203.0.113.10"))): 10,
        ("ananta_vip_bytes", (("mux", "mux1"), ("vip", "203.0.113.10"))): 1000,
        ("ananta_endpoint_packets", (("endpoint", "203.0.113.10:tcp:80"), ("mux", "mux1"))): 9,
        ("ananta_endpoint_bytes", (("endpoint", "203.0.113.10:tcp:80"), ("mux", "mux1"))): 900,
        ("ananta_endpoint_new_connections",
         (("endpoint", "203.0.113.10:tcp:80"), ("mux", "mux1"))): 3,
        ("ananta_vip_dropped_packets", (("mux", "mux1"), ("vip", "203.0.113.10"))): 1,
        ("ananta_vip_rate_limited_packets", (("mux", "mux1"), ("vip", "203.0.113.10"))): 4,
    }


def test_fragment_counters_are_summed_by_step_over_dips() -> None:
    counters = {
        ("mux1", "int"): {(FlowKind.FRAGMENT, "to-agent"): (30, 0),
                          (FlowKind.FRAGMENT, "first"): (10, 0),
                          (FlowKind.FRAGMENT, "echo:10.1.0.11"): (4, 0),
                          (FlowKind.FRAGMENT, "echo:10.1.0.12"): (6, 0),
                          (FlowKind.FRAGMENT, "later:10.1.0.11"): (5, 0),
                          (FlowKind.FRAGMENT, "later:10.1.0.12"): (15, 0)},
        ("mux1", "meters"): {(METER_DROPS, FRAGMENT_METER_OWNER): (3, 0),
                             (METER_DROPS, "203.0.113.10"): (7, 0)},
    }
    samples = counter_samples(counters)
    by_step = {labels["step"]: v for labels, v in samples[FRAGMENT_METRIC]}
    assert by_step == {"steered": 30, "first": 10, "echoed": 10, "later": 20,
                       "meter_dropped": 3}
    limited = next(v for k, v in samples.items() if k[0] == "ananta_vip_rate_limited_packets")
    assert limited == [({"vip": "203.0.113.10", "mux": "mux1"}, 7)]  # not the fragment meter


def test_each_kind_asked_of_a_bridge_keeps_its_own_counters() -> None:
    """The leader asks a Mux's br-int for its counters kind by kind (endpoints, no-endpoint
    drops, fragments): one kind's answer must not replace another's. (It did: /metrics
    showed only whichever kind answered last.)"""
    watch = MuxWatch()
    watch.record_counters("mux1", "int", {(ENDPOINT, "203.0.113.10:tcp:80"): (9, 900)}, 0.0,
                          ENDPOINT)
    watch.record_counters("mux1", "int", {(NO_ENDPOINT, "203.0.113.10"): (1, 60)}, 0.0,
                          NO_ENDPOINT)
    watch.record_counters("mux1", "int", {(FlowKind.FRAGMENT, "to-agent"): (5, 0)}, 0.0,
                          FlowKind.FRAGMENT)
    watch.record_counters("mux1", "int", {(ENDPOINT, "203.0.113.10:tcp:80"): (12, 1200)}, 1.0,
                          ENDPOINT)
    names = {(name, tuple(sorted(labels.items()))): v for (name, _, _), rows in
             counter_samples(watch.all_counters()).items() for labels, v in rows}
    assert names[("ananta_endpoint_packets",
                  (("endpoint", "203.0.113.10:tcp:80"), ("mux", "mux1")))] == 12
    assert names[("ananta_vip_dropped_packets", (("mux", "mux1"), ("vip", "203.0.113.10")))] == 1
    assert names[("ananta_mux_fragments_packets", (("mux", "mux1"), ("step", "steered")))] == 5
