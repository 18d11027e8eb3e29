"""`ananta-mux --config FILE`: bootstrap the Mux's OVS, then run ExaBGP with our announcer.

The Manager programs the data path over OpenFlow; this agent makes the bridges exist, keeps
them there, and runs ExaBGP (restarting it if it dies), whose helper process
(ananta.mux.announcer) announces the VIPs the data path is programmed for.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from ananta.agent import agent_arguments, keep_converged, load_or_report, ovs_env
from ananta.bgp.commands import EXABGP_ENV, BgpPeer, exabgp_config
from ananta.bridges import BR_PHY, FRAG_PORT, INT_FRAG_OFPORT
from ananta.mux import fragport
from ananta.mux.config import MuxConfig, load_mux_config
from ananta.mux.conntrack import ConntrackSettings
from ananta.node import InterfaceSpec, bridge_specs, kernel_neighbor_mac, ovs_has_tunnel_neighbor
from ananta.ovsdb import NodeOvsdb
from ananta.shell import CommandFailed, run

LOG = logging.getLogger("ananta.mux")


def write_exabgp_config(config: MuxConfig, config_path: str) -> str:
    text = exabgp_config(
        router_id=config.underlay_address,
        local_address=config.underlay_address,
        local_as=config.bgp.local_as,
        peers=[BgpPeer(p.address, p.peer_as) for p in config.bgp.peers],
        hold_time=config.bgp.hold_time,
        process_argv=[sys.executable, "-m", "ananta.mux.announcer", "--config",
                      os.path.abspath(config_path)],
        md5_password=config.bgp.md5_password,
    )
    os.makedirs(config.run_dir, exist_ok=True)
    path = os.path.join(config.run_dir, "exabgp.conf")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
    return path


def start_exabgp(config: MuxConfig, conf_path: str) -> subprocess.Popen[bytes]:
    exabgp = os.path.join(os.path.dirname(sys.executable), "exabgp")
    log = open(os.path.join(config.run_dir, "exabgp.log"), "ab")  # noqa: SIM115
    LOG.info("starting ExaBGP: %s %s", exabgp, conf_path)
    return subprocess.Popen([exabgp, conf_path], env={**os.environ, **EXABGP_ENV},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def keep_tunnel_neighbor(config: MuxConfig) -> None:
    """Set OVS's tunnel neighbor entry for the gateway to the MAC the kernel knows (the BGP
    session over the same link keeps that fresh), at every check.

    OVS's userspace tunnels resolve their next hop on demand: a packet that finds no entry
    (the first after a start, a flush or an expiry) is dropped while OVS ARPs, so a
    connection's SYN-ACK waited 1 s; and replies to an arping are not learned once their
    datapath flow is cached. Setting it again each time also keeps it from expiring."""
    gateway = config.uplink.gateway
    neigh = ["ip", "-j", "neigh", "show", "to", gateway, "dev", BR_PHY]
    try:
        mac = kernel_neighbor_mac(run(neigh, timeout=3), gateway)
        if mac is None:
            run(["ping", "-c", "1", "-W", "1", gateway], check=False, timeout=3)
            mac = kernel_neighbor_mac(run(neigh, timeout=3), gateway)
        if mac is None:
            return
        if not ovs_has_tunnel_neighbor(run(["ovs-appctl", "tnl/neigh/show"],
                                           env=ovs_env(config), timeout=3), gateway, mac):
            LOG.info("teaching OVS the tunnel next hop: %s is at %s", gateway, mac)
        run(["ovs-appctl", "tnl/neigh/set", BR_PHY, gateway, mac], env=ovs_env(config),
            timeout=3)
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning("cannot check OVS's tunnel neighbor: %s", exc)


def main(argv: list[str] | None = None) -> int:
    args = agent_arguments("ananta-mux", __doc__, argv)
    config = load_or_report(load_mux_config, args)
    if isinstance(config, int):
        return config
    speaker: subprocess.Popen[bytes] | None = None
    conf_path = ""
    ovsdb = NodeOvsdb(config.ovs_rundir)  # one client (one copy of the database) for both
    conntrack = ConntrackSettings(config, ovsdb)

    def tend() -> None:
        """After every check of the bridges: conntrack's settings, the tunnel next hop, and
        ExaBGP running."""
        nonlocal speaker, conf_path
        conntrack.check()
        keep_tunnel_neighbor(config)
        if speaker is None or speaker.poll() is not None:
            if speaker is not None:
                LOG.error("ExaBGP exited with %s; restarting it", speaker.returncode)
            conf_path = conf_path or write_exabgp_config(config, args.config)
            speaker = start_exabgp(config, conf_path)

    def stop(*_: object) -> None:
        if speaker is not None and speaker.poll() is None:
            speaker.terminate()
            try:
                speaker.wait(5)
            except subprocess.TimeoutExpired:
                speaker.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    frag_port = InterfaceSpec(FRAG_PORT, {"type": "internal", "ofport_request": INT_FRAG_OFPORT,
                                          "mtu_request": config.uplink.mtu})
    specs = bridge_specs(config, int_extra_ports=(frag_port,))
    if not args.once:
        fragport.start(threading.Event())
    code = keep_converged(config, specs, (), args.once, tend, ovsdb=ovsdb)
    conntrack.check()  # (--once: tend ran on no pass)
    return code


if __name__ == "__main__":
    sys.exit(main())
