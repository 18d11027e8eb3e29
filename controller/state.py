"""The Manager's replicated state and the commands that change it (pure).

Raft (pysyncobj) replicates a log of command envelopes; every replica applies them in order
with `apply_command`, which only changes the model: no I/O, no clock, no randomness (the
proposer puts the operation id and its own `now` in the envelope). A command that would make
the state invalid changes nothing and returns the error, so every replica refuses it alike.
"""

from __future__ import annotations

import gc
import hashlib
import json
import zlib
from collections import OrderedDict
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from ananta.config import ConfigError, JsonInteger, StrictModel, key_path
from ananta.controller.model import (
    MAX_RATE_LIMIT_PPS,
    Backend,
    BackendState,
    Endpoint,
    HealthCheck,
    Inventory,
    IPv4,
    Name,
    Port,
    Protocol,
    Services,
    Vip,
    backend_key,
    check_inventory,
    check_services,
    check_vip,
    endpoint_key,
    inventory_index,
    new_connection_weights,
)
from ananta.controller.slot_table import SlotTable, next_table, slot_counts
from ananta.controller.snat import (
    BLOCK_SIZE,
    MAX_BLOCKS_PER_DIP,
    MAX_BLOCKS_PER_TENANT,
    SnatBlock,
    blocks_covering,
    first_free_block,
)

MAX_OPERATIONS_KEPT = 10000
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Tenant(StrictModel):
    name: Name
    token_sha256: Sha256


class Operation(StrictModel):
    op_id: str
    kind: str
    tenant: str | None
    target: str
    generation: int
    proposed_at: float
    affected_nodes: tuple[str, ...] = ()  # Muxes and hosts whose switches this changes
    request_digest: str = ""  # of the command: a retry must ask the same ("" before 2026-11-22)


# --- commands --------------------------------------------------------------------------------

class SetInventory(StrictModel):
    op: Literal["set_inventory"] = "set_inventory"
    inventory: Inventory


class PutTenant(StrictModel):
    op: Literal["put_tenant"] = "put_tenant"
    tenant: Tenant


class DeleteTenant(StrictModel):
    op: Literal["delete_tenant"] = "delete_tenant"
    name: Name


class CreateVip(StrictModel):
    op: Literal["create_vip"] = "create_vip"
    vip: Vip


class DeleteVip(StrictModel):
    op: Literal["delete_vip"] = "delete_vip"
    tenant: Name
    name: Name


class AddEndpoint(StrictModel):
    op: Literal["add_endpoint"] = "add_endpoint"
    tenant: Name
    vip: Name
    endpoint: Endpoint


class RemoveEndpoint(StrictModel):
    op: Literal["remove_endpoint"] = "remove_endpoint"
    tenant: Name
    vip: Name
    protocol: Protocol
    port: Port


class AddBackend(StrictModel):
    op: Literal["add_backend"] = "add_backend"
    tenant: Name
    vip: Name
    protocol: Protocol
    port: Port
    backend: Backend


class UpdateBackend(StrictModel):
    op: Literal["update_backend"] = "update_backend"
    tenant: Name
    vip: Name
    protocol: Protocol
    port: Port
    address: str
    weight: Annotated[int, Field(ge=0, le=1000), JsonInteger] | None = None
    state: BackendState | None = None
    drain_until: float | None = None  # with state "draining": when it becomes inactive


class RemoveBackend(StrictModel):
    op: Literal["remove_backend"] = "remove_backend"
    tenant: Name
    vip: Name
    protocol: Protocol
    port: Port
    address: str


class RequestSnatBlock(StrictModel):
    """A host agent asks for one more SNAT block for a DIP of its own (its ports run short)."""

    op: Literal["request_snat_block"] = "request_snat_block"
    host: Name
    dip: IPv4


class ReleaseSnatBlock(StrictModel):
    """A host agent gives back an idle extra SNAT block (never a DIP's last one)."""

    op: Literal["release_snat_block"] = "release_snat_block"
    host: Name
    dip: IPv4
    start: Annotated[int, Field(ge=0, le=65535), JsonInteger]


class SetVipRateLimit(StrictModel):
    op: Literal["set_vip_rate_limit"] = "set_vip_rate_limit"
    tenant: Name
    vip: Name
    rate_limit_pps: Annotated[int, Field(ge=1, le=MAX_RATE_LIMIT_PPS), JsonInteger] | None


class RebuildSlotTable(StrictModel):
    """Build an endpoint's slot table afresh (fewest split bins), which moves new
    connections' choices: the cure for a table that a long history of changes split into
    many table-4 flows. Established connections keep their DIP (conntrack, on each Mux)."""

    op: Literal["rebuild_slot_table"] = "rebuild_slot_table"
    tenant: Name
    vip: Name
    protocol: Protocol
    port: Port


class HealthResult(StrictModel):
    address: IPv4
    port: Port
    up: bool


class ReportHealth(StrictModel):
    """A host agent's report of health transitions of backends on its own VMs."""

    op: Literal["report_health"] = "report_health"
    host: Name
    results: Annotated[list[HealthResult], Field(min_length=1, max_length=1024)]


class SetMuxDrain(StrictModel):
    """Take a Mux out of (or back into) service: a draining Mux withdraws its VIPs from BGP
    and keeps forwarding what routers still send it."""

    op: Literal["set_mux_drain"] = "set_mux_drain"
    mux: Name
    draining: bool


Command = Annotated[
    SetInventory | PutTenant | DeleteTenant | CreateVip | DeleteVip | AddEndpoint
    | RemoveEndpoint | AddBackend | UpdateBackend | RemoveBackend | ReportHealth | SetMuxDrain
    | SetVipRateLimit | RequestSnatBlock | ReleaseSnatBlock | RebuildSlotTable,
    Field(discriminator="op"),
]


class Envelope(StrictModel):
    op_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    proposed_at: float
    command: Command


class CommandError(Exception):
    def __init__(self, status: int, message: str, path: str = ""):
        self.status, self.message, self.path = status, message, path
        super().__init__(message)


def result_error(status: int, message: str, path: str = "") -> dict[str, Any]:
    return {"ok": False, "status": status, "error": message, "path": path}


# --- state -----------------------------------------------------------------------------------

class ClusterState:
    """Everything the Manager replicates. Mutated only by `apply_command`."""

    def __init__(self) -> None:
        self.generation = 0
        self.inventory = Inventory()
        self.tenants: dict[str, Tenant] = {}
        self.tenant_of_token: dict[str, str] = {}  # derived: token_sha256 -> tenant name
        self.vips: dict[tuple[str, str], Vip] = {}
        self.operations: OrderedDict[str, Operation] = OrderedDict()
        self.down: set[str] = set()  # backend_key of every backend its host agent reported down
        self.draining_muxes: set[str] = set()
        # derived, kept in step by apply_command so that a write costs O(its VIP), not O(all)
        self.endpoint_owner: dict[str, tuple[str, str]] = {}
        self.index = inventory_index(self.inventory)
        self.drain_deadlines: set[tuple[str, str]] = set()  # VIPs with a drain deadline
        self.snat: dict[str, tuple[SnatBlock, ...]] = {}  # DIP -> its SNAT port blocks
        # derived: VIPs each DIP is a backend of; SNAT block starts in use on each VIP
        self.dip_vips: dict[str, set[tuple[str, str]]] = {}
        self.snat_used: dict[str, set[int]] = {}
        # endpoint_key -> the endpoint's slot table (slot_table.py): replicated, as each one
        # is built from the last so that a change moves only the slots it has to
        self.slot_tables: dict[str, SlotTable] = {}

    # Raft snapshots pickle the state (and gzip it at level 9): as JSON through pydantic's
    # compiled serializer, pre-compressed fast, it takes a fraction of the time and space that
    # pickling 100k model objects one by one does.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "inventory": self.inventory.model_dump_json(),
            "tenants": _TENANTS.dump_json(list(self.tenants.values())),
            "vips": zlib.compress(_VIPS.dump_json(list(self.vips.values())), 1),
            "operations": zlib.compress(
                _OPERATIONS.dump_json(list(self.operations.values())), 1),
            "down": sorted(self.down),
            "draining_muxes": sorted(self.draining_muxes),
            "snat": [[b.vip, b.start, b.size, b.dip]
                     for blocks in self.snat.values() for b in blocks],
            # a line per endpoint: its key, a tab, its table's JSON (made once per table)
            "slot_tables": zlib.compress("\n".join(
                f"{k}\t{t.encoded()}" for k, t in self.slot_tables.items()).encode(), 1),
        }

    def __setstate__(self, data: dict[str, Any]) -> None:
        # ~1M objects are made here at 10k VIPs: without the cyclic GC rescanning the heap
        # as they are (0.7 -> 0.45 s), and then out of its reach (see app.GC_FREEZE_INTERVAL)
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._restore(data)
        finally:
            if gc_was_on:
                gc.enable()
        gc.freeze()

    def _restore(self, data: dict[str, Any]) -> None:
        self.generation = data["generation"]
        self.down = set(data["down"])
        self.draining_muxes = set(data.get("draining_muxes", ()))
        self.inventory = Inventory.model_validate_json(data["inventory"])
        self.index = inventory_index(self.inventory)
        self.tenants = {t.name: t for t in _TENANTS.validate_json(data["tenants"])}
        self.tenant_of_token = {t.token_sha256: t.name for t in self.tenants.values()}
        # The snapshot holds what this code validated when it applied each command: rebuild
        # the objects without running every field validator again (seconds at 10k VIPs).
        self.vips = {(v.tenant, v.name): v
                     for v in map(_construct_vip, json.loads(zlib.decompress(data["vips"])))}
        self.operations = OrderedDict(
            (o["op_id"], Operation.model_construct(**{**o, "affected_nodes": tuple(
                o["affected_nodes"])})) for o in json.loads(zlib.decompress(data["operations"])))
        self.endpoint_owner = {
            endpoint_key(v.address, ep.protocol, ep.port): key
            for key, v in self.vips.items() for ep in v.endpoints}
        self.drain_deadlines = {key for key, v in self.vips.items() if _has_deadline(v)}
        self.snat, self.snat_used, self.dip_vips = {}, {}, {}
        for vip, start, size, dip in data.get("snat", ()):
            self.snat[dip] = (*self.snat.get(dip, ()), SnatBlock(vip, start, size, dip))
            self.snat_used.setdefault(vip, set()).add(start)
        for key, v in self.vips.items():
            for dip in _dips(v):
                self.dip_vips.setdefault(dip, set()).add(key)
        if "slot_tables" in data:
            lines = zlib.decompress(data["slot_tables"]).decode()
            self.slot_tables = {k: SlotTable(encoded=t) for k, t in
                                (line.split("\t", 1) for line in lines.split("\n") if line)}
        else:  # a snapshot from before slot tables: every replica builds the same ones
            self.slot_tables = {}
            for v in self.vips.values():
                _update_tables(self, None, v)

    def services(self) -> Services:
        return Services(vips=[self.vips[k] for k in sorted(self.vips)])

    def vip(self, tenant: str, name: str) -> Vip:
        vip = self.vips.get((tenant, name))
        if vip is None:
            raise CommandError(404, f"no VIP {name!r} for tenant {tenant!r}", "name")
        return vip


M = TypeVar("M", bound=StrictModel)


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """`cls.model_construct(**values)` for a complete, already valid field dict, without its
    per-call overhead (which dominates restoring 100k backends)."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _construct_vip(d: dict[str, Any]) -> Vip:
    d["endpoints"] = [_trusted(Endpoint, {**e, "backends": [_trusted(Backend, b)
                                                            for b in e["backends"]],
                                          "health_check": _trusted(HealthCheck,
                                                                   e["health_check"])})
                      for e in d["endpoints"]]
    return _trusted(Vip, d)


_TENANTS = TypeAdapter(list[Tenant])
_VIPS = TypeAdapter(list[Vip])
_OPERATIONS = TypeAdapter(list[Operation])


def _endpoint_index(vip: Vip, protocol: str, port: int) -> int:
    for i, ep in enumerate(vip.endpoints):
        if ep.protocol == protocol and ep.port == port:
            return i
    raise CommandError(404, f"VIP {vip.name!r} has no endpoint {protocol}/{port}", "port")


def _backend_index(ep: Endpoint, address: str) -> int:
    for i, be in enumerate(ep.backends):
        if be.address == address:
            return i
    raise CommandError(404, f"no backend {address} on {ep.protocol}/{ep.port}", "address")


def _with_endpoint(vip: Vip, index: int, endpoint: Endpoint | None) -> Vip:
    endpoints = list(vip.endpoints)
    if endpoint is None:
        del endpoints[index]
    else:
        endpoints[index] = endpoint
    return vip.model_copy(update={"endpoints": endpoints})


def _revalidate(vip: Vip) -> Vip:
    """Re-run field validation on a VIP built by model_copy (which skips it)."""
    try:
        return Vip.model_validate(vip.model_dump())
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CommandError(422, err["msg"], key_path(err["loc"])) from None


def _changed_vip(state: ClusterState, cmd: Any) -> tuple[tuple[str, str], Vip | None]:
    """The VIP a command touches, and what it becomes (None: deleted)."""
    if isinstance(cmd, CreateVip):
        key = (cmd.vip.tenant, cmd.vip.name)
        if cmd.vip.tenant not in state.tenants and cmd.vip.tenant != "default":
            raise CommandError(404, f"no tenant {cmd.vip.tenant!r}", "tenant")
        if key in state.vips:
            raise CommandError(409, f"VIP {cmd.vip.name!r} already exists", "name")
        return key, cmd.vip
    vip = state.vip(cmd.tenant, cmd.name if isinstance(cmd, DeleteVip) else cmd.vip)
    key = (vip.tenant, vip.name)
    if isinstance(cmd, DeleteVip):
        return key, None
    if isinstance(cmd, SetVipRateLimit):
        return key, vip.model_copy(update={"rate_limit_pps": cmd.rate_limit_pps})
    if isinstance(cmd, AddEndpoint):
        return key, _revalidate(vip.model_copy(
            update={"endpoints": [*vip.endpoints, cmd.endpoint]}))
    elif isinstance(cmd, RemoveEndpoint):
        index = _endpoint_index(vip, cmd.protocol, cmd.port)
        if len(vip.endpoints) == 1:
            raise CommandError(409, "a VIP keeps at least one endpoint: delete the VIP", "port")
        return key, _with_endpoint(vip, index, None)
    else:
        index = _endpoint_index(vip, cmd.protocol, cmd.port)
        ep = vip.endpoints[index]
        backends = list(ep.backends)
        if isinstance(cmd, AddBackend):
            backends.append(cmd.backend)
        elif isinstance(cmd, UpdateBackend):
            i = _backend_index(ep, cmd.address)
            changes: dict[str, Any] = {k: v for k, v in (("weight", cmd.weight),
                                                        ("state", cmd.state)) if v is not None}
            if cmd.state is not None:  # a deadline belongs to the drain that set it
                changes["drain_until"] = cmd.drain_until if cmd.state == "draining" else None
            backends[i] = backends[i].model_copy(update=changes)
        elif isinstance(cmd, RemoveBackend):
            del backends[_backend_index(ep, cmd.address)]
        new_ep = ep.model_copy(update={"backends": backends})
        return key, _revalidate(_with_endpoint(vip, index, new_ep))


def _target(cmd: Any) -> tuple[str | None, str]:
    if isinstance(cmd, SetInventory):
        return None, "inventory"
    if isinstance(cmd, ReportHealth):
        return None, f"health/{cmd.host}"
    if isinstance(cmd, SetMuxDrain):
        return None, f"mux/{cmd.mux}"
    if isinstance(cmd, RequestSnatBlock | ReleaseSnatBlock):
        return None, f"snat/{cmd.dip}"
    if isinstance(cmd, PutTenant):
        return cmd.tenant.name, f"tenant/{cmd.tenant.name}"
    if isinstance(cmd, DeleteTenant):
        return cmd.name, f"tenant/{cmd.name}"
    if isinstance(cmd, CreateVip):
        return cmd.vip.tenant, f"vip/{cmd.vip.tenant}/{cmd.vip.name}"
    name = cmd.name if isinstance(cmd, DeleteVip) else cmd.vip
    return cmd.tenant, f"vip/{cmd.tenant}/{name}"


def _affected_nodes(state: ClusterState, before: Vip | None, after: Vip | None) -> tuple[str, ...]:
    """Every Mux, and every host that holds a backend of the VIP before or after."""
    dips = {be.address for vip in (before, after) if vip for ep in vip.endpoints
            for be in ep.backends}
    hosts = [h.name for h in state.inventory.hosts if any(vm.address in dips for vm in h.vms)]
    return tuple([m.name for m in state.inventory.muxes] + hosts)


def _first(errors: list[ConfigError], status: int) -> CommandError:
    e = errors[0]
    return CommandError(status, e.message, e.path)


def _apply(state: ClusterState, cmd: Any) -> None:
    """Change `state` for `cmd`, or raise CommandError having changed nothing."""
    if isinstance(cmd, SetInventory):
        errors = check_inventory(cmd.inventory, "inventory")
        if errors:  # duplicates: consistent with itself is a matter of the whole document
            raise _first(errors, 409)
        errors = check_services(state.services(), cmd.inventory)
        if errors:
            raise CommandError(409, f"the new inventory breaks existing VIPs: {errors[0]}")
        state.inventory = cmd.inventory
        state.index = inventory_index(cmd.inventory)
        state.draining_muxes &= {m.name for m in cmd.inventory.muxes}
    elif isinstance(cmd, PutTenant):
        holder = state.tenant_of_token.get(cmd.tenant.token_sha256)
        if holder is not None and holder != cmd.tenant.name:
            raise CommandError(409, "that token is another tenant's", "token")
        old = state.tenants.get(cmd.tenant.name)
        if old is not None:
            del state.tenant_of_token[old.token_sha256]
        state.tenants[cmd.tenant.name] = cmd.tenant
        state.tenant_of_token[cmd.tenant.token_sha256] = cmd.tenant.name
    elif isinstance(cmd, ReportHealth):
        host = next((h for h in state.inventory.hosts if h.name == cmd.host), None)
        if host is None:
            raise CommandError(404, f"no host {cmd.host!r}", "host")
        own = {vm.address for vm in host.vms}
        for i, r in enumerate(cmd.results):
            if r.address not in own:
                raise CommandError(403, f"{r.address} is not a VM of host {cmd.host!r}",
                                   f"results.{i}.address")
        changed = set()
        for r in cmd.results:
            key = backend_key(r.address, r.port)
            if (key in state.down) == r.up:
                changed.add(r.address)
            (state.down.discard if r.up else state.down.add)(key)
        for vip_key in sorted({k for a in changed for k in state.dip_vips.get(a, ())}):
            vip = state.vips[vip_key]
            for ep in vip.endpoints:
                if any(be.address in changed for be in ep.backends):
                    _update_table(state, vip, ep)
    elif isinstance(cmd, RequestSnatBlock | ReleaseSnatBlock):
        _own_vm(state, cmd.host, cmd.dip)
        blocks = state.snat.get(cmd.dip, ())
        if not blocks:
            raise CommandError(409, f"{cmd.dip} has no SNAT block (not a backend?)", "dip")
        if isinstance(cmd, RequestSnatBlock):
            _extra_snat_block(state, cmd.dip, blocks)
        else:
            gone = next((b for b in blocks if b.start == cmd.start), None)
            if gone is None:
                raise CommandError(404, f"{cmd.dip} has no SNAT block at {cmd.start}", "start")
            if len(blocks) == 1:
                raise CommandError(409, f"{cmd.dip} keeps its last SNAT block", "start")
            state.snat[cmd.dip] = tuple(b for b in blocks if b is not gone)
            state.snat_used[gone.vip].discard(gone.start)
    elif isinstance(cmd, SetMuxDrain):
        if not any(m.name == cmd.mux for m in state.inventory.muxes):
            raise CommandError(404, f"no Mux {cmd.mux!r}", "mux")
        (state.draining_muxes.add if cmd.draining else state.draining_muxes.discard)(cmd.mux)
    elif isinstance(cmd, RebuildSlotTable):
        vip = state.vip(cmd.tenant, cmd.vip)
        ep = vip.endpoints[_endpoint_index(vip, cmd.protocol, cmd.port)]
        key = endpoint_key(vip.address, ep.protocol, ep.port)
        if key not in state.slot_tables:
            raise CommandError(409, "no backend of the endpoint takes new connections", "port")
        state.slot_tables.pop(key)
        _update_table(state, vip, ep)
    elif isinstance(cmd, DeleteTenant):
        if cmd.name not in state.tenants:
            raise CommandError(404, f"no tenant {cmd.name!r}", "name")
        if any(t == cmd.name for t, _ in state.vips):
            raise CommandError(409, f"tenant {cmd.name!r} still has VIPs", "name")
        del state.tenant_of_token[state.tenants.pop(cmd.name).token_sha256]
    else:
        key, vip = _changed_vip(state, cmd)
        old = state.vips.get(key)
        if vip is not None:
            # Every rule here depends on the current state (the pool, the inventory, the other
            # VIPs): a well-formed request that breaks one conflicts with that state (409).
            errors = check_vip(vip, state.index) + _snat_conflicts(state, vip)
            for j, ep in enumerate(vip.endpoints):
                owner = state.endpoint_owner.get(endpoint_key(vip.address, ep.protocol, ep.port))
                if owner is not None and owner != key:
                    errors.append(ConfigError(f"endpoints[{j}]", f"duplicates the endpoint of "
                                              f"VIP {owner[1]!r} ({vip.address} "
                                              f"{ep.protocol}/{ep.port})"))
            if errors:
                raise CommandError(409, errors[0].message, errors[0].path)
        if old is not None:
            for ep in old.endpoints:
                state.endpoint_owner.pop(endpoint_key(old.address, ep.protocol, ep.port))
        state.drain_deadlines.discard(key)
        if vip is None:
            del state.vips[key]
        else:
            state.vips[key] = vip
            if _has_deadline(vip):
                state.drain_deadlines.add(key)
            for ep in vip.endpoints:
                state.endpoint_owner[endpoint_key(vip.address, ep.protocol, ep.port)] = key
        _update_tables(state, old, vip)
        before, after = _dips(old) if old else set(), _dips(vip) if vip else set()
        for dip in before - after:
            state.dip_vips[dip].discard(key)
        for dip in after:
            state.dip_vips.setdefault(dip, set()).add(key)
        for dip in sorted(before | after):
            _place_snat(state, dip)


def _update_table(state: ClusterState, vip: Vip, ep: Endpoint) -> None:
    """The endpoint's next slot table, from its last, for the backends taking new
    connections now (none: no table)."""
    key = endpoint_key(vip.address, ep.protocol, ep.port)
    table = next_table(state.slot_tables.get(key),
                       slot_counts(new_connection_weights(ep, state.down)))
    if table is None:
        state.slot_tables.pop(key, None)
    else:
        state.slot_tables[key] = table


def _update_tables(state: ClusterState, old: Vip | None, new: Vip | None) -> None:
    """Drop the tables of endpoints `old` had and `new` has not; bring `new`'s up to date."""
    kept = ({endpoint_key(new.address, ep.protocol, ep.port) for ep in new.endpoints}
            if new else set())
    if old is not None:
        for ep in old.endpoints:
            key = endpoint_key(old.address, ep.protocol, ep.port)
            if key not in kept:
                state.slot_tables.pop(key, None)
    if new is not None:
        for ep in new.endpoints:
            _update_table(state, new, ep)


def _dips(vip: Vip) -> set[str]:
    return {be.address for ep in vip.endpoints for be in ep.backends}


def _snat_conflicts(state: ClusterState, vip: Vip) -> list[ConfigError]:
    """A VIP may not serve a port that is in a SNAT block on its address. Blocks are
    BLOCK_SIZE-aligned, so the index of used starts answers it without a scan (this runs on
    every VIP write); the owner is looked up only to name it in the error."""
    used = state.snat_used.get(vip.address, set())
    errors = []
    for j, ep in enumerate(vip.endpoints):
        if ep.port - ep.port % BLOCK_SIZE not in used:
            continue
        for dip, blocks in sorted(state.snat.items()):
            for b in blocks_covering(blocks, vip.address, ep.port):
                errors.append(ConfigError(f"endpoints[{j}].port", f"port {ep.port} is in the "
                                          f"SNAT ports {b.start}-{b.end} of {vip.address} given "
                                          f"to backend {dip}"))
    return errors


def _place_snat(state: ClusterState, dip: str) -> None:
    """Keep the DIP's blocks on VIPs it still serves; a backend with none gets a first block
    (on the first of its VIPs, by tenant and name, with one free); a DIP that serves no VIP
    any more gives its blocks back."""
    vip_addresses = {state.vips[k].address: k for k in state.dip_vips.get(dip, ())}
    kept = tuple(b for b in state.snat.get(dip, ()) if b.vip in vip_addresses)
    for b in state.snat.get(dip, ()):
        if b not in kept:
            state.snat_used[b.vip].discard(b.start)
    if not kept:
        for key in sorted(vip_addresses.values()):
            vip = state.vips[key]
            start = first_free_block(state.snat_used.get(vip.address, ()),
                                     {ep.port for ep in vip.endpoints})
            if start is not None:
                kept = (SnatBlock(vip.address, start, BLOCK_SIZE, dip),)
                state.snat_used.setdefault(vip.address, set()).add(start)
                break
    if kept:
        state.snat[dip] = kept
    else:
        state.snat.pop(dip, None)
    if not vip_addresses:
        state.dip_vips.pop(dip, None)


def _own_vm(state: ClusterState, host_name: str, address: str) -> None:
    host = next((h for h in state.inventory.hosts if h.name == host_name), None)
    if host is None:
        raise CommandError(404, f"no host {host_name!r}", "host")
    if address not in {vm.address for vm in host.vms}:
        raise CommandError(403, f"{address} is not a VM of host {host_name!r}", "dip")


def _extra_snat_block(state: ClusterState, dip: str, blocks: tuple[SnatBlock, ...]) -> None:
    """One more block on the DIP's VIP, right after its last one when free (one range)."""
    if len(blocks) >= MAX_BLOCKS_PER_DIP:
        raise CommandError(429, f"{dip} has {len(blocks)} SNAT blocks, the most a DIP may "
                           "have", "dip")
    vip_address = blocks[0].vip
    key = next(k for k in sorted(state.dip_vips[dip]) if state.vips[k].address == vip_address)
    tenant = key[0]
    tenant_blocks = sum(len(state.snat.get(d, ())) for (t, _), v in state.vips.items()
                        if t == tenant for d in _dips(v))
    if tenant_blocks >= MAX_BLOCKS_PER_TENANT:
        raise CommandError(429, f"tenant {tenant!r} has {tenant_blocks} SNAT blocks, its cap",
                           "dip")
    vip = state.vips[key]
    start = first_free_block(state.snat_used.get(vip_address, ()),
                             {ep.port for ep in vip.endpoints}, BLOCK_SIZE,
                             after=max(b.start for b in blocks))
    if start is None:
        raise CommandError(409, f"no free SNAT block left on {vip_address}", "dip")
    state.snat[dip] = (*blocks, SnatBlock(vip_address, start, BLOCK_SIZE, dip))
    state.snat_used.setdefault(vip_address, set()).add(start)


def _has_deadline(vip: Vip) -> bool:
    return any(be.drain_until is not None for ep in vip.endpoints for be in ep.backends)


def expired_drains(state: ClusterState, now: float) -> list[tuple[str, dict[str, Any]]]:
    """(op id, command) making inactive every draining backend whose deadline has passed. The
    op id is derived from the drain, so replicas (or retries) proposing it apply it once."""
    out = []
    for tenant, name in sorted(state.drain_deadlines):
        vip = state.vips[(tenant, name)]
        for ep in vip.endpoints:
            for be in ep.backends:
                if be.state == "draining" and be.drain_until is not None and be.drain_until <= now:
                    key = f"{tenant}/{name}/{ep.protocol}/{ep.port}/{be.address}/{be.drain_until}"
                    out.append((hashlib.sha256(key.encode()).hexdigest()[:32], {
                        "op": "update_backend", "tenant": tenant, "vip": name,
                        "protocol": ep.protocol, "port": ep.port, "address": be.address,
                        "state": "inactive"}))
    return out


def apply_command(state: ClusterState, envelope: Envelope) -> dict[str, Any]:
    """Apply one committed command. Deterministic; never raises for a bad command."""
    cmd = envelope.command
    request = hashlib.blake2b(cmd.model_dump_json().encode(), digest_size=16).hexdigest()
    if envelope.op_id in state.operations:  # a retried proposal: answer as the first time
        op = state.operations[envelope.op_id]
        if op.request_digest and op.request_digest != request:
            return result_error(409, f"operation id {op.op_id} was used for another request "
                                     f"({op.kind} {op.target})", "Operation-Id")
        return {"ok": True, "status": 200, "op_id": op.op_id, "generation": op.generation}
    tenant, target = _target(cmd)
    vip_key = tuple(target.split("/")[1:]) if target.startswith("vip/") else None
    before = state.vips.get(vip_key) if vip_key else None  # type: ignore[arg-type]
    try:
        _apply(state, cmd)
    except CommandError as exc:
        return result_error(exc.status, exc.message, exc.path)
    after = state.vips.get(vip_key) if vip_key else None  # type: ignore[arg-type]
    affected = _affected_nodes(state, before, after) if vip_key else ()
    if isinstance(cmd, SetInventory):
        affected = tuple(n.name for n in (*state.inventory.muxes, *state.inventory.hosts))
    elif isinstance(cmd, ReportHealth):  # the Muxes' choice of backends changes
        affected = tuple(m.name for m in state.inventory.muxes)
    elif isinstance(cmd, SetMuxDrain):
        affected = (cmd.mux,)
    elif isinstance(cmd, RequestSnatBlock | ReleaseSnatBlock):
        affected = (*(m.name for m in state.inventory.muxes), cmd.host)
    state.generation += 1
    state.operations[envelope.op_id] = Operation(
        op_id=envelope.op_id, kind=cmd.op, tenant=tenant, target=target,
        generation=state.generation, proposed_at=envelope.proposed_at,
        affected_nodes=affected, request_digest=request)
    while len(state.operations) > MAX_OPERATIONS_KEPT:
        state.operations.popitem(last=False)
    return {"ok": True, "status": 200, "op_id": envelope.op_id, "generation": state.generation}
