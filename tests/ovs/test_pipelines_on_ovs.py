"""The Manager programs one Mux and one hypervisor on real userspace OVS."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from ananta.controller.compile_mux import FRAGMENT_METER_ID, bucket_id, chosen_dip, endpoint_group
from ananta.controller.flows import ip_int
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


def mux_trace(rig: Rig, sport: int, dport: int = 80) -> str:
    return rig.trace(MUX_NS, "br-phy", f"in_port=1,tcp,nw_src=198.51.100.2,"
                     f"nw_dst=203.0.113.10,tp_src={sport},tp_dst={dport}")


def test_switches_hold_exactly_the_desired_flows(rig: Rig) -> None:
    assert rig.programmed()
    groups = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", "br-int")
    assert "selection_method=hash" in groups
    assert "fields(ip_src,ip_dst,nw_proto,tcp_src,tcp_dst)" in groups
    for ip in VM_IPS:
        assert f"bucket_id:{bucket_id(ip)}," in groups


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
    out = rig.trace(MUX_NS, "br-phy", f"in_port=1,tcp,nw_src={src},nw_dst=203.0.113.10,"
                    f"tp_src={sport},tp_dst=80")
    m = re.search(r"set_field:(0x[0-9a-f]+)->tun_id", out)
    assert m, out
    return str(ipaddress.IPv4Address(int(m.group(1), 16)))


@pytest.mark.parametrize("weights", [(100, 100), (100, 300)])
def test_the_oracle_predicts_the_dip_ovs_picks(rig: Rig, weights: tuple[int, int]) -> None:
    """For 150 new connections, the pure model of OVS's hash names the DIP that
    `ofproto/trace` shows the Manager-programmed Mux choosing."""
    data = services()
    for be, w in zip(data["vips"][0]["endpoints"][0]["backends"], weights, strict=True):
        be["weight"] = w
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()
    vip = rig.services().vips[0]
    group = endpoint_group(vip, vip.endpoints[0], rig.inventory)
    rnd = random.Random(sum(weights))
    seen: Counter[str] = Counter()
    for _ in range(150):
        src, sport = f"198.51.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", rnd.randrange(65536)
        dip = traced_dip(rig, src, sport)
        assert dip == chosen_dip(group, src, "203.0.113.10", "tcp", sport, 80), (src, sport)
        seen[dip] += 1
    assert set(seen) == set(VM_IPS)
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


def test_manager_restart_changes_nothing_and_a_change_is_reconciled(rig: Rig) -> None:
    before = {b: rig.cookies(MUX_NS, b) for b in ("br-int", "br-phy")}
    rig.stop_manager()
    rig.start_manager()
    rig.wait_programmed()
    assert {b: rig.cookies(MUX_NS, b) for b in ("br-int", "br-phy")} == before
    # one backend leaves: its bucket and its host flows go, nothing else changes
    rig.write_services(services(backend_ips=(VM_IPS[0],)))
    rig.wait_programmed()
    groups = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-groups", "br-int")
    assert f"bucket_id:{bucket_id(VM_IPS[1])}" not in groups
    assert f"bucket_id:{bucket_id(VM_IPS[0])}" in groups
    # bad services are refused by the API, naming the field; the switches keep what they had
    flows_before = rig.cookies(MUX_NS, "br-int") | rig.cookies(HV_NS, "br-int")
    bad = services(backend_ips=(VM_IPS[0],))
    bad["vips"][0]["endpoints"][0]["backends"][0]["weight"] = 100000
    result = rig.write_services(bad)
    assert result.returncode != 0 and "weight" in result.stderr, result.stderr
    assert rig.cookies(MUX_NS, "br-int") | rig.cookies(HV_NS, "br-int") == flows_before
    assert rig.write_services(services()).returncode == 0
    rig.wait_programmed()


def test_a_syn_learns_nothing_its_ack_an_untrusted_entry_then_trusted(rig: Rig) -> None:
    """Real packets generated into the Mux (`ofproto/trace -generate` runs learn())."""
    def send(flags: str) -> None:
        rig.ovs(MUX_NS, "ovs-appctl", "ofproto/trace", "-generate", "br-phy",
                "in_port=1,tcp,nw_src=198.51.100.77,nw_dst=203.0.113.10,tp_src=45000,"
                f"tp_dst=80,tcp_flags={flags}")

    def entries() -> list[str]:
        dump = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int",
                       "table=1,tcp,nw_src=198.51.100.77")
        return sorted(line for line in dump.splitlines() if "tp_src=45000" in line)

    send("0x002")
    assert entries() == []  # a half-open connection holds no state
    send("0x010")
    (untrusted,) = entries()
    assert "idle_timeout=10," in untrusted and "priority=100," in untrusted, untrusted
    assert "set_field:0x1->reg3" in untrusted and "fin_timeout(idle_timeout=5)" in untrusted
    send("0x018")
    trusted = [e for e in entries() if "priority=110," in e]
    assert len(trusted) == 1 and "idle_timeout=300," in trusted[0], entries()
    assert "set_field:0x2->reg3" in trusted[0]
    tunnel = re.search(r"set_field:(0x[0-9a-f]+)->tun_id", untrusted)
    assert tunnel and tunnel.group(1) in trusted[0]  # the same DIP


def test_a_syn_overwrites_an_older_connections_entry_in_place(rig: Rig) -> None:
    """OVS's learn() on an existing entry replaces its actions and cookie (the DIP): a SYN
    on a 5-tuple that still has an entry rewrites it, here to the same DIP, as untrusted."""
    def send(flags: str) -> None:
        rig.ovs(MUX_NS, "ovs-appctl", "ofproto/trace", "-generate", "br-phy",
                "in_port=1,tcp,nw_src=198.51.100.78,nw_dst=203.0.113.10,tp_src=45001,"
                f"tp_dst=80,tcp_flags={flags}")

    def entry(priority: int) -> str:
        dump = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int",
                       "table=1,tcp,nw_src=198.51.100.78")
        (line,) = [e for e in dump.splitlines() if f"priority={priority}," in e]
        return line

    for flags in ("0x002", "0x010", "0x018"):
        send(flags)
    assert "set_field:0x2->reg3" in entry(110)
    send("0x002")  # a new connection on the same 5-tuple
    again = entry(110)
    assert "set_field:0x1->reg3" in again and "idle_timeout=300," in again, again
    send("0x018")
    assert "set_field:0x2->reg3" in entry(110)


def test_a_syn_flood_on_one_vip_cannot_evict_another_vips_connections(rig: Rig) -> None:
    """The Mux's connection table holds 200 entries here. VIP .10 has 30 confirmed
    connections (60 entries); 300 ACKs of unknown connections to VIP .11 overflow the
    table, and OVS evicts only .11's entries (the VIP with the most)."""
    data = services()
    data["vips"].append({**services(vip="203.0.113.11")["vips"][0], "name": "flooded"})
    assert rig.write_services(data).returncode == 0
    rig.wait_programmed()

    def packet(vip: str, sport: int, flags: int) -> None:
        rig.ovs(MUX_NS, "ovs-appctl", "ofproto/trace", "-generate", "br-phy",
                f"in_port=1,tcp,nw_src=198.51.100.9,nw_dst={vip},tp_src={sport},tp_dst=80,"
                f"tcp_flags={flags:#x}")

    def entries(vip: str) -> int:
        dump = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int",
                       f"table=1,tcp,nw_src=198.51.100.9,nw_dst={vip}")
        return sum(1 for line in dump.splitlines() if "tp_src=" in line)

    try:
        for sport in range(20000, 20030):
            packet("203.0.113.10", sport, 0x002)
            packet("203.0.113.10", sport, 0x010)  # untrusted entry
            packet("203.0.113.10", sport, 0x018)  # trusted entry
        assert entries("203.0.113.10") == 60
        for sport in range(30000, 30300):  # (SYNs alone would make no entry at all)
            packet("203.0.113.11", sport, 0x010)
        assert entries("203.0.113.10") == 60
        assert 0 < entries("203.0.113.11") <= 200 - 60  # (the table holds a few others too)
    finally:
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


def test_a_removed_backends_connection_entries_are_deleted(rig: Rig) -> None:
    """Entries of a removed backend go (their next packets are hashed to a live backend);
    the other backends' entries stay."""
    vip = rig.services().vips[0]
    group = endpoint_group(vip, vip.endpoints[0], rig.inventory)
    sports: dict[str, int] = {}
    for sport in range(47000, 47100):
        sports.setdefault(str(chosen_dip(group, "198.51.100.8", "203.0.113.10", "tcp", sport,
                                         80)), sport)
    assert set(sports) == set(VM_IPS)
    for sport in sports.values():
        for flags in ("0x002", "0x010", "0x018"):  # SYN; ACK: untrusted; data: trusted
            rig.ovs(MUX_NS, "ovs-appctl", "ofproto/trace", "-generate", "br-phy",
                    f"in_port=1,tcp,nw_src=198.51.100.8,nw_dst=203.0.113.10,tp_src={sport},"
                    f"tp_dst=80,tcp_flags={flags}")

    def entries(dip: str) -> int:
        dump = rig.ovs(MUX_NS, "ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "br-int",
                       "table=1,tcp,nw_src=198.51.100.8")
        return sum(1 for line in dump.splitlines() if f"{ip_int(dip):#x}->tun_id" in line)

    assert entries(VM_IPS[0]) == 2 and entries(VM_IPS[1]) == 2  # untrusted + trusted each
    try:
        assert rig.write_services(services(backend_ips=(VM_IPS[0],))).returncode == 0
        rig.wait_programmed()
        deadline = time.monotonic() + 5
        while entries(VM_IPS[1]):
            assert time.monotonic() < deadline, rig.manager_log()[-2000:]
            time.sleep(0.1)
        assert entries(VM_IPS[0]) == 2
    finally:
        assert rig.write_services(services()).returncode == 0
        rig.wait_programmed()
