"""The Manager programs one Mux and one hypervisor on real userspace OVS."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from ananta.controller.compile_mux import (
    FRAGMENT_METER_ID,
    chosen_dip,
    packet_dp_hash,
    vip_zone,
)
from ananta.controller.flows import ip_int, is_lease
from tests.ovs.rig import API, HV_NS, MUX_NS, UNDERLAY, VM_IPS, Rig, services


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        r.start()
        r.wait_programmed()
        yield r
    finally:
        r.stop()


def mux_trace(rig: Rig, sport: int, dport: int = 80, src: str = "198.51.100.2") -> str:
    """The Mux's trace of a new connection, given the hash the datapath would give it."""
    dp_hash = packet_dp_hash(src, "203.0.113.10", "tcp", sport, dport)
    return rig.trace(MUX_NS, "br-phy", f"in_port=1,tcp,nw_src={src},nw_dst=203.0.113.10,"
                     f"tp_src={sport},tp_dst={dport},dp_hash={dp_hash:#x}")


def test_switches_hold_exactly_the_desired_flows(rig: Rig) -> None:
    assert rig.programmed()
    groups = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", "br-int")
    assert "selection_method=dp_hash" in groups
    assert groups.count("bucket_id:") == 256
    for ip in VM_IPS:
        assert f"set_field:{ip_int(ip):#x}->tun_id" in groups


def test_mux_encapsulates_to_the_dips_host_with_key_dip(rig: Rig) -> None:
    keys = set()
    for sport in range(40000, 40040):
        out = mux_trace(rig, sport)
        assert f"set_field:{UNDERLAY[HV_NS]}->tun_dst" in out, out
        m = re.search(r"set_field:(0x[0-9a-f]+)->tun_id", out)
        assert m, out
        keys.add(int(m.group(1), 16))
    assert keys == {ip_int(ip) for ip in VM_IPS}


def traced_dip(rig: Rig, src: str, sport: int) -> str:
    out = mux_trace(rig, sport, src=src)
    m = re.search(r"set_field:(0x[0-9a-f]+)->tun_id", out)
    assert m, out
    return str(ipaddress.IPv4Address(int(m.group(1), 16)))


@pytest.mark.parametrize("weights", [(100, 100), (100, 301)])
def test_the_oracle_predicts_the_dip_ovs_picks(rig: Rig, weights: tuple[int, int]) -> None:
    """For 150 new connections, the Manager's slot table and the model of the datapath's
    hash name the DIP that `ofproto/trace` shows the Manager-programmed Mux choosing (split
    bins included: with weights 1:3, a DIP's 16384 and 49152 slots fill whole bins, so the
    weights are made uneven enough to split some)."""
    data = services()
    for be, w in zip(data["vips"][0]["endpoints"][0]["backends"], weights, strict=True):
        be["weight"] = w
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()
    vip = rig.services().vips[0]
    table = rig.table(vip)
    rnd = random.Random(sum(weights))
    seen: Counter[str] = Counter()
    for _ in range(150):
        src, sport = f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", rnd.randrange(65536)
        dip = traced_dip(rig, src, sport)
        assert dip == chosen_dip(table, src, "203.0.113.10", "tcp", sport, 80), (src, sport)
        seen[dip] += 1
    assert set(seen) == set(VM_IPS)
    assert rig.write_services(services()).returncode == 0
    rig.wait_programmed()


def test_real_packets_land_where_the_oracle_says(rig: Rig) -> None:
    """Real SYNs go through the Mux's datapath, which hashes them itself: each is committed
    with the DIP the oracle names. 60 consecutive source ports, and 10 per DIP chosen to land
    in the table's split bin (through the bucket's copy of dp_hash and table 4's masked
    matches)."""
    data = services()
    data["vips"][0]["endpoints"][0]["backends"][1]["weight"] = 301
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()
    src = "198.51.100.33"
    try:
        table = rig.table(rig.services().vips[0])
        assert table is not None
        in_split_bin = [p for p in range(1024, 65536) if len(table.bins[packet_dp_hash(
            src, "203.0.113.10", "tcp", p, 80) & 0xFF]) > 1]
        split = [p for ip in VM_IPS for p in [
            p for p in in_split_bin
            if chosen_dip(table, src, "203.0.113.10", "tcp", p, 80) == ip][:10]]
        assert len(split) == 20
        send(rig, src, 50000, "0x002", count=60)
        for sport in split:
            send(rig, src, sport, "0x002")
        time.sleep(0.2)
        entries = conntrack(rig, src)
        assert len(entries) == 80  # the rig allows 100 per VIP
        for e in entries:
            want = chosen_dip(table, src, "203.0.113.10", "tcp", e["sport"], 80)
            assert e["mark"] == ip_int(str(want)), e
        assert {e["mark"] for e in entries} == {ip_int(ip) for ip in VM_IPS}
        assert {e["mark"] for e in entries if e["sport"] in split} == {
            ip_int(ip) for ip in VM_IPS}  # both DIPs' runs of the split bin
    finally:
        rig.ovs(MUX_NS, "ovs-appctl", "dpctl/flush-conntrack")
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()


def test_mux_drops_a_vip_port_without_endpoint(rig: Rig) -> None:
    out = mux_trace(rig, 40000, dport=81)
    assert out.rstrip().endswith("Datapath actions: drop"), out


def test_host_decapsulates_and_dnats_to_the_vm(rig: Rig) -> None:
    out = rig.trace(HV_NS, "br-int", f"in_port=1,tun_id={ip_int(VM_IPS[1])},tcp,"
                    "nw_src=198.51.100.2,nw_dst=203.0.113.10,tp_src=40000,tp_dst=80")
    assert "ct(commit,zone=11,nat(dst=10.9.0.12:8080))" in out, out
    assert "output:11" in out, out


def programmed_cookies(rig: Rig, ns: str, bridge: str) -> set[int]:
    """The cookies of the flows reconciliation owns. The leader's lease flow is left out: it
    is re-added every second with the generation the Mux holds in its cookie, so a snapshot
    taken within a second of a write may still show the previous generation's lease."""
    return {c for c in rig.cookies(ns, bridge) if not is_lease(c)}


def test_manager_restart_changes_nothing_and_a_change_is_reconciled(rig: Rig) -> None:
    before = {b: programmed_cookies(rig, MUX_NS, b) for b in ("br-int", "br-phy")}
    rig.stop_manager()
    rig.start_manager()
    rig.wait_programmed()
    assert {b: programmed_cookies(rig, MUX_NS, b) for b in ("br-int", "br-phy")} == before
    assert any(is_lease(c) for c in rig.cookies(MUX_NS, "br-phy"))
    # one backend leaves: its bucket and its host flows go, nothing else changes
    rig.write_services(services(backend_ips=(VM_IPS[0],)))
    rig.wait_programmed()
    groups = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", "br-int")
    assert f"set_field:{ip_int(VM_IPS[1]):#x}->tun_id" not in groups
    assert f"set_field:{ip_int(VM_IPS[0]):#x}->tun_id" in groups
    # bad services are refused by the API, naming the field; the switches keep what they had
    flows_before = rig.cookies(MUX_NS, "br-int") | rig.cookies(HV_NS, "br-int")
    bad = services(backend_ips=(VM_IPS[0],))
    bad["vips"][0]["endpoints"][0]["backends"][0]["weight"] = 100000
    result = rig.write_services(bad)
    assert result.returncode != 0 and "weight" in result.stderr, result.stderr
    assert rig.cookies(MUX_NS, "br-int") | rig.cookies(HV_NS, "br-int") == flows_before
    assert rig.write_services(services()).returncode == 0
    rig.wait_programmed()


def send(rig: Rig, src: str, sport: int, flags: str, vip: str = "203.0.113.10",
         count: int = 0) -> None:
    """TCP segments from the router's side of the Mux's uplink (see tests/ovs/frames.py)."""
    rig.ovs(HV_NS, sys.executable, "-m", "tests.ovs.frames", "uplink", src, vip, str(sport),
            "80", flags, *([str(count)] if count else []))


def conntrack(rig: Rig, src: str) -> list[dict[str, int]]:
    """The Mux's conntrack entries from `src`: sport, zone, mark, timeout (s left)."""
    dump = rig.ovs(MUX_NS, "ovs-appctl", "dpctl/dump-conntrack", "-s")
    return [{"sport": int(m[0]), "zone": int(m[1]), "timeout": int(m[2]), "mark": int(m[3])}
            for m in re.findall(rf"orig=\(src={re.escape(src)},dst=[\d.]+,sport=(\d+),.*?"
                                r"zone=(\d+),timeout=(\d+),mark=(\d+)", dump)]


def test_a_connection_is_tracked_in_its_vips_zone_and_trusted_once_it_is_more_than_a_syn(
        rig: Rig) -> None:
    """The SYN commits the connection in its VIP's zone, marked with the DIP the group chose
    (the oracle's); the zone's timeout policy (set by the Mux agent) keeps an entry that saw
    only a SYN 10 s, one that saw more 300 s, and one that saw an RST 5 s."""
    vip = rig.services().vips[0]
    dip = chosen_dip(rig.table(vip), "198.51.100.77", "203.0.113.10", "tcp", 45000, 80)
    send(rig, "198.51.100.77", 45000, "0x002")
    (entry,) = conntrack(rig, "198.51.100.77")
    assert entry["zone"] == vip_zone("203.0.113.10") and entry["mark"] == ip_int(str(dip))
    assert entry["timeout"] <= 10, entry  # untrusted
    send(rig, "198.51.100.77", 45000, "0x010,0x018")
    (entry,) = conntrack(rig, "198.51.100.77")
    assert 10 < entry["timeout"] <= 300 and entry["mark"] == ip_int(str(dip)), entry  # trusted
    send(rig, "198.51.100.77", 45000, "0x014")
    (entry,) = conntrack(rig, "198.51.100.77")
    assert entry["timeout"] <= 5, entry


def test_a_connection_whose_backend_left_is_hashed_again_and_marked_with_the_new_one(
        rig: Rig) -> None:
    """A removed backend's connections are not followed into the void: their next packet
    has no flow for its mark, is hashed to a live backend and committed again with it."""
    vip = rig.services().vips[0]
    table = rig.table(vip)
    sport = next(p for p in range(47000, 47100)
                 if chosen_dip(table, "198.51.100.8", "203.0.113.10", "tcp", p, 80) == VM_IPS[1])
    send(rig, "198.51.100.8", sport, "0x002,0x010")
    assert [e["mark"] for e in conntrack(rig, "198.51.100.8")] == [ip_int(VM_IPS[1])]
    try:
        assert rig.write_services(services(backend_ips=(VM_IPS[0],))).returncode == 0
        rig.wait_programmed()
        send(rig, "198.51.100.8", sport, "0x018")
        assert [e["mark"] for e in conntrack(rig, "198.51.100.8")] == [ip_int(VM_IPS[0])]
    finally:
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()


def test_a_syn_flood_on_one_vip_cannot_take_another_vips_share(rig: Rig) -> None:
    """Each VIP's connections are limited to 100 here (per zone). 300 spoofed SYNs to VIP .11
    fill .11's zone to its limit and no further; VIP .10 keeps its 20 connections and still
    takes new ones."""
    data = services()
    data["vips"].append({**services(vip="203.0.113.11")["vips"][0], "name": "flooded"})
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()

    def counts() -> Counter[int]:
        return Counter(e["zone"] for e in conntrack(rig, "198.51.100.9"))

    try:
        calm, flooded = vip_zone("203.0.113.10"), vip_zone("203.0.113.11")
        send(rig, "198.51.100.9", 20000, "0x002", count=20)
        send(rig, "198.51.100.9", 30000, "0x002", vip="203.0.113.11", count=300)
        time.sleep(0.2)
        assert counts() == {calm: 20, flooded: 100}, (counts(), rig.ovs(
            MUX_NS, "ovs-appctl", "dpctl/ct-get-limits", f"zone={calm},{flooded}"))
        send(rig, "198.51.100.9", 20100, "0x002", count=5)
        time.sleep(0.2)
        assert counts()[calm] == 25
    finally:
        rig.ovs(MUX_NS, "ovs-appctl", "dpctl/flush-conntrack")
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()


def test_a_vips_meter_drops_above_its_rate(rig: Rig) -> None:
    data = services()
    data["vips"][0]["rate_limit_pps"] = 10
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()
    try:
        meters = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-meters", "br-int")
        assert "pktps burst stats bands=" in meters and "type=drop rate=10 burst_size=10" in meters
        for sport in range(46000, 46150):  # far faster than 10 packets/s
            rig.ovs(MUX_NS, "ovs-appctl", "ofproto/trace", "-generate", "br-phy",
                    f"in_port=1,tcp,nw_src=198.51.100.5,nw_dst=203.0.113.10,tp_src={sport},"
                    "tp_dst=80,tcp_flags=0x002")
        stats = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "meter-stats", "br-int")
        # the VIP's meter (the Mux's fragment meter, id 200001, saw nothing)
        dropped = re.findall(r"0: packet_count:(\d+)", stats)
        assert dropped and max(map(int, dropped)) >= 100, stats
        # ... and the Manager reports it (it reads the Muxes' meters every second)
        metric = 'ananta_vip_rate_limited_packets_total{mux="mux",vip="203.0.113.10"}'
        deadline = time.monotonic() + 10
        while True:
            text = rig.ovs(MUX_NS, "curl", "-s", f"{API}/metrics")
            seen = [float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith(metric)]
            if seen and seen[0] >= 100:
                break
            assert time.monotonic() < deadline, text[-2000:]
            time.sleep(0.5)
    finally:
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()
    left = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-meters", "br-int")
    assert re.findall(r"meter=(\d+)", left) == [str(FRAGMENT_METER_ID)]  # the VIP's is gone


def test_a_drain_deadline_ends_the_drain(rig: Rig) -> None:
    """The leader makes a draining backend inactive when its deadline passes: its host flows
    go (what was left of its connections is cut)."""
    rig.cli("backend", "drain", "web", "tcp:80", VM_IPS[1], "--deadline", "2", "--tenant",
            "default")
    drained_at = time.monotonic()
    try:
        while rig.services().vips[0].endpoints[0].backends[1].state != "inactive":
            assert time.monotonic() - drained_at < 8, rig.manager_log()[-2000:]
            time.sleep(0.2)
        assert time.monotonic() - drained_at >= 2
        rig.wait_programmed()
        out = rig.trace(HV_NS, "br-int", f"in_port=1,tun_id={ip_int(VM_IPS[1])},tcp,"
                        "nw_src=198.51.100.2,nw_dst=203.0.113.10,tp_src=40000,tp_dst=80")
        assert "nat(dst=10.9.0.12" not in out, out
    finally:
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()


def test_a_vms_outbound_connection_leaves_as_vip_port_of_its_snat_block(rig: Rig) -> None:
    blocks = json.loads(rig.cli("snat", "--json").stdout)
    block = next(b for b in blocks if b["dip"] == VM_IPS[0])
    assert block["vip"] == "203.0.113.10" and block["start"] >= 1024
    out = rig.trace(HV_NS, "br-int", f"in_port=10,tcp,nw_src={VM_IPS[0]},nw_dst=198.51.100.99,"
                    "tp_src=40000,tp_dst=9000,tcp_flags=0x002")
    assert (f"ct(commit,zone=10,nat(src=203.0.113.10:{block['start']}-{block['end']}))"
            in out), out
    # the return traffic: each Mux sends the block to the DIP's host, keyed by the DIP
    port = block["start"] + 7
    out = rig.trace(MUX_NS, "br-phy", "in_port=1,tcp,nw_src=198.51.100.99,nw_dst=203.0.113.10,"
                    f"tp_src=9000,tp_dst={port}")
    assert f"set_field:{UNDERLAY[HV_NS]}->tun_dst" in out, out
    assert f"set_field:{ip_int(VM_IPS[0]):#x}->tun_id" in out, out
    out = rig.trace(HV_NS, "br-int", f"in_port=1,tun_id={ip_int(VM_IPS[0])},tcp,"
                    f"nw_src=198.51.100.99,nw_dst=203.0.113.10,tp_src=9000,tp_dst={port}")
    assert "ct(table=4,zone=10,nat)" in out, out
