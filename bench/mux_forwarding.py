"""One Mux's forwarding rate against a plain userspace OVS bridge and a Linux router, in the
same run.

Three namespaces: `bf-src` (the traffic source, and the sink), `bf-mux` (one ovs-vswitchd,
bootstrapped by the real `ananta-mux --once` and programmed by a real one-replica
`ananta-manager` on loopback) and `bf-rtr` (kernel IP forwarding). The source sends UDP to a
VIP through the Mux, which encapsulates every packet to the "host" of its backends, on the
source's link; the plain bridge (`br-plain`, same vswitchd, same port type) sends every
packet straight back; the router routes it back on a second veth pair. Packets per second =
packets arriving back at the source, over the sending time (after a 1 s warm-up per path,
not counted). Each round measures the three paths back to back, in an order that turns from
round to round, and a ratio is the median of the rounds' own ratios: the machine drifts
between a slower and a faster state within a run, which a ratio of medians taken at
different moments mixes into the comparison.

The sink costs every path the same: each sends its packets to a MAC that no interface of
the source has (the host's, the plain bridge's next hop, the router's next hop are all set
so), and the source's kernel drops them on arrival, where they are counted. A sink that
took the Mux's GRE packets up its IP stack charged that work to the Mux: on a veth, the
receiver's softirq runs on the sending CPU, which is the Mux's vswitchd (the same two-pass
pipeline measured 0.89x a plain bridge with the GRE going to a foreign MAC, 0.69x with it
going to the source's own; bench/notes/mux_forwarding.md).

- established flows: 64 UDP flows, each already known (tracked by conntrack), sent as
  fast as the source can;
- new connections: a new source port (or address) per datagram, paced at offered rates of
  2.5k, 5k, 10k, 15k, 20k, 25k, 30k, 40k, 60k and 80k per second for 2 s each; the figure is
  the highest rate delivered with at most 1% lost. On the plain bridge a flow that reads the
  source address and port makes every new 5-tuple a datapath miss (an upcall), as a select
  group hashing the 5-tuple in ovs-vswitchd would; the Mux's dp_hash group costs none.

Ports (`--driver`): af_xdp (the default) gives the Mux's uplink and the plain bridge's port
to AF_XDP sockets (generic XDP: veths have no zero-copy), polled by one PMD thread on CPU 1
that sleeps up to 100 us when idle (the Mux's `uplink.driver` and `pmd` settings); the
source, the router and everything else share CPU 0. af_packet keeps both on AF_PACKET
sockets served by ovs-vswitchd's main thread, unpinned (result: mux_forwarding_af_packet).

    .venv/bin/python bench/mux_forwarding.py [--driver af_xdp|af_packet] [--seconds 1.5]
                                             [--rounds 12] [--ladder-rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import metric, write_result  # noqa: E402

SRC, MUX, RTR = "bf-src", "bf-mux", "bf-rtr"
BIN = os.path.dirname(sys.executable)
VIP, PORT = "203.0.113.10", 5000
PMD_CPU_MASK = "0x2"  # af_xdp: the PMD thread on CPU 1
PLAIN_DST, ROUTED_DST = "192.0.2.10", "192.0.2.20"
HOST, HOST_MAC = "198.18.99.250", "02:00:00:00:99:fa"  # the backends' host: no interface's
ROUTER_NEXT_HOP_MAC = "02:00:00:00:96:02"  # where the router sends: no interface's either
NETS = {"198.18.99": "up0", "198.18.98": "pl0"}  # the Mux's and the plain bridge's
SOURCES = 120  # source addresses per path for new connections: 64,512 ports each
LADDER = (2500, 5000, 10000, 15000, 20000, 25000, 30000, 40000, 60000, 80000)  # new conn/s
LOSS_FREE = 0.01
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
DPIDS = {"int": "00b0000000000901", "phy": "00b0000000000902"}


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True,
       timeout: float = 60) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr}{proc.stdout}")
    return proc.stdout


class Bench:
    def __init__(self, driver: str = "af_xdp") -> None:
        self.driver = driver
        self.dir = tempfile.mkdtemp(prefix="ananta-bench-")
        self.env = {"OVS_RUNDIR": self.dir}
        self.manager: subprocess.Popen[bytes] | None = None
        self.next_source: dict[str, int] = {}

    def mux(self, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", MUX, *argv, env=self.env, check=check)

    def src(self, *argv: str, timeout: float = 60) -> str:
        return sh("ip", "netns", "exec", SRC, *argv, timeout=timeout)

    def start(self) -> None:
        self.stop_namespaces()
        for ns in (SRC, MUX, RTR):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.router()
        for a, b in (("up0", "uplink"), ("pl0", "plain")):
            sh("ip", "link", "add", a, "netns", SRC, "mtu", "1600", "type", "veth", "peer",
               "name", b, "netns", MUX, "mtu", "1600")
            sh("ip", "netns", "exec", SRC, "ethtool", "-K", a, "tx", "off")
            sh("ip", "-n", SRC, "link", "set", a, "up")
        # .2 is the "host" the Mux tunnels to; the rest are sources of new connections
        batch = "".join(f"addr add {net}.{i}/24 dev {dev}\n" for net, dev in NETS.items()
                        for i in range(2, 2 + SOURCES))
        subprocess.run(["ip", "-n", SRC, "-batch", "-"], input=batch, text=True, check=True)
        sh("ip", "-n", SRC, "route", "add", f"{VIP}/32", "via", "198.18.99.1")
        sh("ip", "-n", SRC, "route", "add", f"{PLAIN_DST}/32", "via", "198.18.98.1")
        sh("ip", "-n", SRC, "neigh", "add", "198.18.98.1", "lladdr", "02:00:00:00:98:01",
           "dev", "pl0")
        d = self.dir
        self.mux("ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        self.mux("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                 f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
                 "--detach", "--no-chdir")
        self.mux("ovs-vsctl", "--no-wait", "init")
        self.mux("ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid",
                 f"--log-file={d}/ovs-vswitchd.log", "--detach", "--no-chdir")
        self.write_configs()
        self.mux(f"{BIN}/ananta-mux", "--once", "--config", f"{d}/mux.yaml")
        self.plain_bridge()
        log = open(f"{d}/manager.log", "ab")  # noqa: SIM115
        self.manager = subprocess.Popen(
            ["ip", "netns", "exec", MUX, f"{BIN}/ananta-manager", "--config",
             f"{d}/manager.yaml"], stdout=log, stderr=subprocess.STDOUT)
        self.apply_services()
        self.wait_programmed()
        self.pin_host_mac()

    def pin_host_mac(self) -> None:
        """OVS's tunnel next hop for the host, which answers no ARP (it is no interface):
        set again before each measurement, so it never ages out."""
        self.mux("ovs-appctl", "tnl/neigh/set", "br-phy", HOST, HOST_MAC)

    def router(self) -> None:
        """A Linux router namespace: in on rt0, out on rt1, back to the source namespace,
        which drops what it receives (not its address; it does not forward)."""
        for a, b, net in (("rt0", "r-in", "198.18.97"), ("rt1", "r-out", "198.18.96")):
            sh("ip", "link", "add", a, "netns", SRC, "type", "veth", "peer", "name", b,
               "netns", RTR)
            sh("ip", "-n", RTR, "addr", "add", f"{net}.1/24", "dev", b)
            sh("ip", "-n", SRC, "addr", "add", f"{net}.2/24", "dev", a)
            for ns, dev in ((SRC, a), (RTR, b)):
                sh("ip", "-n", ns, "link", "set", dev, "up")
        for i in range(3, 6):
            sh("ip", "-n", SRC, "addr", "add", f"198.18.97.{i}/24", "dev", "rt0")
        sh("ip", "netns", "exec", RTR, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", RTR, "route", "add", f"{ROUTED_DST}/32", "via", "198.18.96.2")
        sh("ip", "-n", RTR, "neigh", "replace", "198.18.96.2", "lladdr", ROUTER_NEXT_HOP_MAC,
           "dev", "r-out", "nud", "permanent")
        sh("ip", "-n", SRC, "route", "add", f"{ROUTED_DST}/32", "via", "198.18.97.1")

    def write_configs(self) -> None:
        d = self.dir
        mux = {"name": "mux", "ovs_rundir": d, "datapath_ids": DPIDS, "run_dir": d,
               "uplink": {"interface": "uplink", "address": "198.18.99.1/24",
                          "gateway": "198.18.99.2", "driver": self.driver,
                          "xdp_mode": "generic"},
               "managers": ["127.0.0.1:6653"],
               **({"pmd": {"cpu_mask": PMD_CPU_MASK, "max_sleep_us": 100}}
                  if self.driver == "af_xdp" else {}),
               "bgp": {"local_as": 65100, "peers": [{"address": "198.18.99.2",
                                                     "peer_as": 65011}]}}
        inventory = {
            "vip_pool": ["203.0.113.0/24"],
            "muxes": [{"name": "mux", "underlay_address": "198.18.99.1", "datapath_ids": DPIDS}],
            "hosts": [{"name": "hv", "underlay_address": HOST,
                       "datapath_ids": {"int": "00b0000000000a01", "phy": "00b0000000000a02"},
                       "vms": [{"name": f"vm{i}", "address": f"10.9.0.{10 + i}",
                                "mac": f"02:00:0a:09:00:{10 + i:02x}", "ofport": 10 + i,
                                "gateway": "10.9.0.1"} for i in (1, 2)]}]}
        with open(f"{d}/raft.password", "w") as fh:
            fh.write("bench-raft-password-0123456789\n")
        manager = {"self": "m1", "replicas": [{"name": "m1", "raft": "127.0.0.1:7001",
                                               "api": "127.0.0.1:8080"}],
                   "raft_password_file": f"{d}/raft.password",
                   "admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
                   "data_dir": f"{d}/manager-data",
                   "openflow": {"listen_address": "127.0.0.1", "port": 6653},
                   "inventory": inventory}
        services = {"vips": [{"name": "bench", "address": VIP, "endpoints": [{
            "protocol": "udp", "port": PORT, "backends": [
                {"address": f"10.9.0.{10 + i}", "port": PORT} for i in (1, 2)]}]}]}
        for name, data in (("mux", mux), ("manager", manager), ("services", services)):
            with open(f"{d}/{name}.yaml", "w") as fh:
                yaml.safe_dump(data, fh)

    def plain_bridge(self) -> None:
        sh("ip", "-n", MUX, "link", "set", "plain", "up")
        self.mux("ovs-vsctl", "--", "add-br", "br-plain", "--", "set", "bridge", "br-plain",
                 "datapath_type=netdev", "fail_mode=secure",
                 "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
                 "--", "add-port", "br-plain", "plain", "--", "set", "interface", "plain",
                 "ofport_request=1",
                 *(["type=afxdp", "options:xdp-mode=generic"] if self.driver == "af_xdp"
                   else []))
        # reading the source address and port makes OVS's datapath flow exact on them: every
        # new 5-tuple is a miss, an upcall with the simplest translation
        for flow in ("priority=50,udp,actions=move:NXM_OF_UDP_SRC[]->NXM_NX_REG0[0..15],"
                     "move:NXM_OF_IP_SRC[]->NXM_NX_REG1[],in_port", "priority=0,actions=drop"):
            self.mux("ovs-ofctl", "add-flow", "br-plain", flow)

    def cli(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", MUX, sys.executable, "-m", "ananta.cli", *args,
                  "--url", "http://127.0.0.1:8080", env={"ANANTA_TOKEN": ADMIN_TOKEN},
                  check=check)

    def apply_services(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.cli("apply", "-f", f"{self.dir}/services.yaml", "--no-wait")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def wait_programmed(self) -> None:
        deadline = time.monotonic() + 30
        while "group_id=" not in self.mux("ovs-ofctl", "-O", "OpenFlow15", "dump-groups",
                                          "br-int"):
            if time.monotonic() > deadline:
                raise RuntimeError("the Mux was not programmed")
            time.sleep(0.2)
        time.sleep(1.0)

    def rx(self, iface: str) -> int:
        return int(self.src("cat", f"/sys/class/net/{iface}/statistics/rx_packets"))

    def blast(self, iface: str, dst: str, src: str, flows: int, seconds: float,
              pps: float = 0) -> tuple[int, int, float]:
        """(sent, came back on `iface`, seconds sending)."""
        self.pin_host_mac()
        before = self.rx(iface)
        out = json.loads(self.src(
            sys.executable, os.path.join(HERE, "udp_blast.py"), "--dst", dst, "--port",
            str(PORT), "--seconds", str(seconds), "--src", src, "--flows", str(flows),
            "--pps", str(pps), timeout=seconds + 60))
        time.sleep(0.3)
        if out["exhausted"]:
            raise RuntimeError(f"udp_blast ran out of source ports: {out}")
        return out["sent"], self.rx(iface) - before, out["seconds"]

    def packet_rate(self, iface: str, dst: str, src: str, seconds: float) -> tuple[float, float]:
        """(packets/s back at the source, the share of those sent that came back: 1.0 means
        the path kept up and the source was the limit)."""
        sent, got, elapsed = self.blast(iface, dst, src, 64, seconds)
        return min(sent, got) / elapsed, min(got / sent, 1.0)

    def new_connection_ladder(self, iface: str, dst: str, net: str,
                              seconds: float) -> list[dict[str, float]]:
        """Delivered share at each offered rate of new connections, each step from source
        addresses never used before (so every 5-tuple is new); stops after a step losing
        more than 10%."""
        steps: list[dict[str, float]] = []
        for rate in LADDER:
            need = int(rate * seconds * 1.2) // 64512 + 1
            first = self.next_source.get(net, 3)
            if first + need > 2 + SOURCES:
                raise RuntimeError(f"out of source addresses on {net}")
            self.next_source[net] = first + need
            src = ",".join(f"{net}.{i}" for i in range(first, first + need))
            sent, got, elapsed = self.blast(iface, dst, src, 0, seconds, rate)
            steps.append({"offered": rate, "sent_per_s": round(sent / elapsed),
                          "delivered": round(min(got, sent) / sent, 4)})
            if got < 0.9 * sent:
                break
        return steps

    def stop_namespaces(self) -> None:
        for ns in (SRC, MUX, RTR):
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)

    def stop(self) -> None:
        if self.manager is not None and self.manager.poll() is None:
            self.manager.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.manager.wait(5)
        self.stop_namespaces()  # every process left in them: vswitchd, ovsdb-server
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--driver", choices=("af_xdp", "af_packet"), default="af_xdp",
                    help="how OVS reads and writes the ports (the same for the Mux and the "
                         "plain bridge)")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--ladder-rounds", type=int, default=2)
    args = ap.parse_args()
    bench = Bench(args.driver)
    rows: dict[str, list[float]] = {k: [] for k in ("mux_pps", "plain_pps", "router_pps")}
    delivered: dict[str, list[float]] = {k: [] for k in rows}
    ladders: dict[str, list[list[dict[str, float]]]] = {"mux": [], "plain": []}
    try:
        bench.start()
        for iface, dst, src in (("up0", VIP, "198.18.99.2"), ("pl0", PLAIN_DST, "198.18.98.2"),
                                ("rt1", ROUTED_DST, "198.18.97.2")):
            bench.blast(iface, dst, src, 64, 1.0)  # warm-up, not counted: ARP, first upcalls
        # packet rate first: the new-connection runs leave thousands of datapath flows that
        # the revalidator threads then sweep, competing for the 2 cores
        paths = [("mux_pps", "up0", VIP, "198.18.99.2"),
                 ("plain_pps", "pl0", PLAIN_DST, "198.18.98.2"),
                 ("router_pps", "rt1", ROUTED_DST, "198.18.97.2")]
        for r in range(args.rounds):
            for key, iface, dst, src in paths[r % 3:] + paths[:r % 3]:
                rate, share = bench.packet_rate(iface, dst, src, args.seconds)
                rows[key].append(rate)
                delivered[key].append(share)
        for _ in range(args.ladder_rounds):
            ladders["mux"].append(bench.new_connection_ladder("up0", VIP, "198.18.99", 2.0))
            ladders["plain"].append(bench.new_connection_ladder("pl0", PLAIN_DST, "198.18.98",
                                                                2.0))
        print({k: [round(x) for x in v] for k, v in rows.items()}, ladders, file=sys.stderr)
    finally:
        bench.stop()
    med: dict[str, Any] = {k: statistics.median(v) for k, v in rows.items()}
    vs_plain = statistics.median(
        m / p for m, p in zip(rows["mux_pps"], rows["plain_pps"], strict=True))
    vs_router = statistics.median(
        m / r for m, r in zip(rows["mux_pps"], rows["router_pps"], strict=True))

    def loss_free(ladder: list[dict[str, float]]) -> float:
        """The highest offered rate delivered with at most 1% lost (0 if none was)."""
        return max((s["offered"] for s in ladder if s["delivered"] >= 1 - LOSS_FREE), default=0)

    cps = {k: [loss_free(lad) for lad in v] for k, v in ladders.items()}
    mux_cps, plain_cps = statistics.median(cps["mux"]), statistics.median(cps["plain"])
    metrics = [
        metric("mux_packets_per_s", med["mux_pps"], "pkt/s", ">= 0.9x plain bridge",
               vs_plain >= 0.9, baseline=med["plain_pps"], ratio=vs_plain,
               ratio_of="median of the rounds' Mux / plain bridge ratios",
               reference="Ananta: 220 kpps per core (kernel driver, 2013); here a plain "
                         "userspace bridge with AF_PACKET ports: ~124 kpps",
               rounds=rows["mux_pps"], baseline_rounds=rows["plain_pps"],
               baseline_label="plain bridge", delivered={
                   k: round(statistics.median(v), 4) for k, v in delivered.items()}),
        metric("mux_packets_per_s_vs_router", med["mux_pps"], "pkt/s", ">= 1.0x Linux router",
               vs_router >= 1.0, baseline=med["router_pps"], ratio=vs_router,
               ratio_of="median of the rounds' Mux / Linux router ratios",
               reference="the real aim: kernel forwarding is the limit here (Linux router "
                         "209 kpps measured once); OVS AF_XDP ports reach it",
               rounds=rows["mux_pps"], baseline_rounds=rows["router_pps"],
               baseline_label="Linux router"),
        metric("mux_new_connections_per_s", mux_cps, "conn/s",
               ">= 0.9x plain bridge new flows", mux_cps >= 0.9 * plain_cps,
               baseline=plain_cps, baseline_label="plain bridge",
               reference="the highest offered rate (of " + ", ".join(map(str, LADDER)) +
                         ") delivered with <= 1% lost; each a datapath miss on both",
               rounds=cps["mux"], baseline_rounds=cps["plain"], ladders=ladders),
    ]
    if args.driver == "af_xdp":
        write_result("mux_forwarding", metrics, driver=args.driver)
    else:
        write_result("mux_forwarding_af_packet", metrics, driver=args.driver,
                     script="mux_forwarding", variant="with AF_PACKET ports (`--driver af_packet`)")


if __name__ == "__main__":
    main()
