"""ExaBGP commands and config; what the Mux agent reads from its flow dump."""

from __future__ import annotations

from ananta.bgp.commands import BgpPeer, announce, exabgp_config, route_changes, withdraw
from ananta.mux.programmed import steer_cookie_filter, vips_in_flow_dump


def test_route_changes_withdraw_first_then_announce() -> None:
    assert route_changes({"203.0.113.1", "203.0.113.2"}, {"203.0.113.2", "203.0.113.3"}) == [
        withdraw("203.0.113.1"), announce("203.0.113.3")]
    assert route_changes({"203.0.113.2"}, {"203.0.113.2"}) == []
    assert announce("203.0.113.10") == "announce route 203.0.113.10/32 next-hop self"


def test_exabgp_config_has_neighbor_process_and_hold_time() -> None:
    text = exabgp_config("198.18.7.2", "198.18.7.2", 65100, [BgpPeer("198.18.7.1", 65011)], 3,
                         ["/venv/bin/python", "-m", "ananta.mux.announcer", "--config",
                          "/run/x/mux.yaml"], md5_password="s3cret")
    assert "neighbor 198.18.7.1 {" in text
    assert "hold-time 3;" in text and "peer-as 65011;" in text
    assert "md5-password 's3cret';" in text
    assert "run /venv/bin/python -m ananta.mux.announcer --config /run/x/mux.yaml;" in text


def test_vips_read_from_a_flow_dump() -> None:
    dump = (
        " cookie=0xa702123412345678, duration=1.2s, table=0, n_packets=3, n_bytes=200, "
        "priority=200,ip,in_port=1,nw_dst=203.0.113.10 actions=output:2\n"
        " cookie=0xa702aaaa12345678, duration=1.2s, table=0, n_packets=0, n_bytes=0, "
        "priority=200,ip,in_port=1,nw_dst=203.0.113.11 actions=output:2\n"
    )
    assert vips_in_flow_dump(dump) == {"203.0.113.10", "203.0.113.11"}
    assert steer_cookie_filter() == "cookie=0xa702000000000000/0xffff000000000000"
