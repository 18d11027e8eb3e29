"""The Manager's model: VIPs, endpoints, backends (services) and the node inventory (pure).

A services document (YAML) looks like::

    vips:
      - name: web
        address: 203.0.113.10
        endpoints:
          - protocol: tcp
            port: 80
            backends:
              - {address: 10.1.0.11, port: 8080, weight: 100}

The inventory (part of the Manager's config) says which Muxes and hypervisors exist, their
underlay addresses and datapath ids, and which VMs (DIPs) each hypervisor hosts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from ananta.config import ConfigError, JsonInteger, JsonNumber, StrictModel, join_path

MAX_BACKENDS_PER_ENDPOINT = 256
MAX_WEIGHT = 1000
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _mac(value: str) -> str:
    value = value.lower()
    if not _MAC.match(value):
        raise ValueError(f"not a MAC address: {value!r}")
    if int(value[:2], 16) & 1:
        raise ValueError(f"multicast MAC address: {value!r}")
    return value


def _dpid(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", value.lower()):
        raise ValueError(f"not a 16-hex-digit datapath id: {value!r}")
    return value.lower()


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except ValueError:
        raise ValueError(f"not an IPv4 network: {value!r}") from None


# The JSON schema of each type says what the validator accepts, so that the OpenAPI spec is
# exact (and clients, or a fuzzer, can tell valid input from invalid input up front).
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = rf"{_OCTET}(\.{_OCTET}){{3}}"
IPv4 = Annotated[str, AfterValidator(_ipv4),
                 WithJsonSchema({"type": "string", "pattern": f"^{_IPV4_RE}$"})]
Cidr = Annotated[str, AfterValidator(_cidr),
                 WithJsonSchema({"type": "string", "pattern": f"^{_IPV4_RE}/(3[0-2]|[12]?[0-9])$"})]
Mac = Annotated[str, AfterValidator(_mac),
                WithJsonSchema({"type": "string",
                                "pattern": "^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$"})]
DatapathId = Annotated[str, AfterValidator(_dpid),
                       WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]{16}$"})]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535), JsonInteger]
Protocol = Literal["tcp", "udp"]
BackendState = Literal["active", "draining", "inactive"]


class Backend(StrictModel):
    address: IPv4
    port: Port
    weight: Annotated[int, Field(ge=0, le=MAX_WEIGHT), JsonInteger] = 100
    state: BackendState = "active"
    # a draining backend becomes inactive at this time (UNIX seconds), cutting what is left
    # of its connections; none: it drains until its connections end on their own
    drain_until: Annotated[float, JsonNumber] | None = None

    @property
    def takes_new_connections(self) -> bool:
        return self.state == "active" and self.weight > 0


class HealthCheck(StrictModel):
    """How each host agent probes its local backends of an endpoint.

    `tcp`: a TCP connect to the backend's port; `http`: GET `path`, expecting `expect_status`;
    `none`: never probed, always healthy (e.g. UDP). A backend goes down after `fall`
    failed probes in a row and comes back after `rise` good ones; with the defaults a dead
    backend is out of every Mux within about 1.5 s. A probe's timeout is capped at the
    interval.
    """

    type: Literal["tcp", "http", "none"] = "tcp"
    path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=200)] = "/"
    expect_status: Annotated[int, Field(ge=100, le=599), JsonInteger] = 200
    interval_ms: Annotated[int, Field(ge=100, le=60000), JsonInteger] = 500
    timeout_ms: Annotated[int, Field(ge=50, le=60000), JsonInteger] = 300
    rise: Annotated[int, Field(ge=1, le=10), JsonInteger] = 2
    fall: Annotated[int, Field(ge=1, le=10), JsonInteger] = 2

    @property
    def timeout_s(self) -> float:
        return min(self.timeout_ms, self.interval_ms) / 1000


class Endpoint(StrictModel):
    protocol: Protocol
    port: Port
    backends: Annotated[list[Backend], Field(min_length=1, max_length=MAX_BACKENDS_PER_ENDPOINT)]
    # default: a TCP connect for TCP, none for UDP (a TCP probe of a UDP port always fails)
    health_check: HealthCheck = HealthCheck()

    @model_validator(mode="before")
    @classmethod
    def _udp_is_not_probed_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("protocol") == "udp" and "health_check" not in data:
            return {**data, "health_check": {"type": "none"}}
        return data


MAX_RATE_LIMIT_PPS = 10_000_000


class Vip(StrictModel):
    name: Name
    tenant: Name = "default"
    address: IPv4
    endpoints: Annotated[list[Endpoint], Field(min_length=1)]
    # New and established packets to the VIP's endpoints above this rate are dropped by every
    # Mux (an OpenFlow meter each); none: unlimited.
    rate_limit_pps: Annotated[int, Field(ge=1, le=MAX_RATE_LIMIT_PPS), JsonInteger] | None = None


class Services(StrictModel):
    vips: list[Vip] = []


class Vm(StrictModel):
    name: Name
    address: IPv4
    mac: Mac
    ofport: Annotated[int, Field(ge=10, le=60000), JsonInteger]
    gateway: IPv4


class BridgeIds(StrictModel):
    int: DatapathId
    phy: DatapathId


class MuxNode(StrictModel):
    name: Name
    underlay_address: IPv4
    datapath_ids: BridgeIds


class HostNode(StrictModel):
    name: Name
    underlay_address: IPv4
    datapath_ids: BridgeIds
    vms: list[Vm] = []
    # the host agent's bearer token, hashed: it may report the health of this host's VMs only
    agent_token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Inventory(StrictModel):
    vip_pool: list[Cidr] = ["0.0.0.0/0"]
    muxes: list[MuxNode] = []
    hosts: list[HostNode] = []


def _duplicates(items: Sequence[tuple[str, object]]) -> list[ConfigError]:
    seen: dict[object, str] = {}
    errors = []
    for path, key in items:
        if key in seen:
            errors.append(ConfigError(path, f"duplicates {seen[key]} ({key})"))
        else:
            seen[key] = path
    return errors


def check_inventory(inv: Inventory, prefix: str = "") -> list[ConfigError]:
    """Cross-field rules of the inventory: unique names, addresses, dpids, VM ports."""
    names, addrs, dpids, vm_addrs = [], [], [], []
    errors: list[ConfigError] = []
    for i, pool in enumerate(inv.vip_pool):
        try:
            ipaddress.IPv4Network(pool)
        except ValueError:
            errors.append(ConfigError(join_path(prefix, "vip_pool", i), f"not a network: {pool}"))
    nodes: list[tuple[str, MuxNode | HostNode]] = [
        (join_path(prefix, "muxes", i), m) for i, m in enumerate(inv.muxes)
    ] + [(join_path(prefix, "hosts", i), h) for i, h in enumerate(inv.hosts)]
    for path, node in nodes:
        names.append((f"{path}.name", node.name))
        addrs.append((f"{path}.underlay_address", node.underlay_address))
        dpids.append((f"{path}.datapath_ids.int", node.datapath_ids.int))
        dpids.append((f"{path}.datapath_ids.phy", node.datapath_ids.phy))
    for i, host in enumerate(inv.hosts):
        ports = []
        for j, vm in enumerate(host.vms):
            vpath = join_path(prefix, "hosts", i, "vms", j)
            vm_addrs.append((f"{vpath}.address", vm.address))
            ports.append((f"{vpath}.ofport", vm.ofport))
            names.append((f"{vpath}.name", vm.name))
        errors += _duplicates(ports)
    for group in (names, addrs, dpids, vm_addrs):
        errors += _duplicates(group)
    return errors


@dataclass(frozen=True)
class InventoryIndex:
    """What VIP validation needs from the inventory, computed once per inventory."""

    pools: tuple[ipaddress.IPv4Network, ...]
    known_dips: frozenset[str]
    node_addresses: frozenset[str]


def inventory_index(inv: Inventory) -> InventoryIndex:
    return InventoryIndex(
        pools=tuple(ipaddress.IPv4Network(p) for p in inv.vip_pool),
        known_dips=frozenset(vm.address for host in inv.hosts for vm in host.vms),
        node_addresses=frozenset([m.underlay_address for m in inv.muxes]
                                 + [h.underlay_address for h in inv.hosts]))


def backend_key(address: str, port: int) -> str:
    """How DIP health is keyed: a backend is an address and a port."""
    return f"{address}:{port}"


def endpoint_key(address: str, protocol: str, port: int) -> str:
    return f"{address} {protocol}/{port}"


def new_connection_weights(ep: Endpoint, down: frozenset[str] | set[str]) -> dict[str, int]:
    """DIP -> weight of the endpoint's backends that take new connections: active, weight
    above 0, and not reported down by their host agent."""
    return {be.address: be.weight for be in ep.backends
            if be.takes_new_connections and backend_key(be.address, be.port) not in down}


def check_vip(vip: Vip, index: InventoryIndex, vpath: str = "") -> list[ConfigError]:
    """Rules one VIP obeys on its own: in the pool, not a DIP or node address, every DIP a
    known VM and listed once per endpoint, each protocol/port once."""
    errors: list[ConfigError] = []
    address = ipaddress.IPv4Address(vip.address)
    if not any(address in pool for pool in index.pools):
        errors.append(ConfigError(join_path(vpath, "address"),
                                  f"{vip.address} is outside the VIP pool"))
    if vip.address in index.known_dips or vip.address in index.node_addresses:
        errors.append(ConfigError(join_path(vpath, "address"),
                                  f"{vip.address} is a DIP or node address"))
    endpoints = []
    for j, ep in enumerate(vip.endpoints):
        epath = join_path(vpath, "endpoints", j)
        endpoints.append((epath, endpoint_key(vip.address, ep.protocol, ep.port)))
        dips = []
        for k, be in enumerate(ep.backends):
            bpath = f"{epath}.backends[{k}]"
            dips.append((f"{bpath}.address", be.address))
            if be.address not in index.known_dips:
                errors.append(ConfigError(
                    f"{bpath}.address", f"{be.address} is not a VM in the inventory"))
        errors += _duplicates(dips)
    return errors + _duplicates(endpoints)


def check_services(services: Services, inv: Inventory, prefix: str = "") -> list[ConfigError]:
    """Cross-field rules of a services document against the inventory: every VIP's own rules
    (check_vip), and tenant/name and VIP:protocol:port unique across all VIPs of all tenants.
    """
    index = inventory_index(inv)
    errors: list[ConfigError] = []
    names, endpoints = [], []
    for i, vip in enumerate(services.vips):
        vpath = join_path(prefix, "vips", i)
        names.append((f"{vpath}.name", f"{vip.tenant}/{vip.name}"))
        errors += [e for e in check_vip(vip, index, vpath) if "duplicates" not in e.message
                   or ".backends[" in e.path]
        endpoints += [(join_path(vpath, "endpoints", j),
                       endpoint_key(vip.address, ep.protocol, ep.port))
                      for j, ep in enumerate(vip.endpoints)]
    errors += _duplicates(names)
    errors += _duplicates(endpoints)
    return errors
