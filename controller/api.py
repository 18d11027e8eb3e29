"""The Manager's REST API (FastAPI on uvicorn): thin, every decision in the pure core.

Served by every replica. Reads answer from the local replica's state; writes are proposed to
Raft (pysyncobj forwards a follower's command to the leader) and answer only once committed,
with an operation id whose status moves from `committed` to `programmed` when every affected
Mux and host has confirmed it with a barrier (that part is known to the leader only, so
followers relay operation reads to it).

(No `from __future__ import annotations` here: FastAPI must see the real annotation objects,
including the `Who`/`Admin` dependencies defined inside `create_app`.)
"""

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from typing import Protocol as Interface

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ananta.config import JsonInteger
from ananta.controller.health import ProbeTarget, probe_targets
from ananta.controller.model import (
    MAX_RATE_LIMIT_PPS,
    Backend,
    BackendState,
    Endpoint,
    Inventory,
    IPv4,
    Name,
    Protocol,
    Vip,
    endpoint_key,
)
from ananta.controller.mux_watch import MuxWatch, counter_samples
from ananta.controller.slot_table import encode as encode_table
from ananta.controller.state import ClusterState, HealthResult, Operation

API = "/api/v1"
LOG = logging.getLogger("ananta.manager.api")
# Optional parameters default to "" rather than None so that the OpenAPI spec does not
# offer `null`, which a query string or a header cannot carry.
TenantQuery = Annotated[str, Query(pattern=r"^[a-z][a-z0-9-]{0,30}$",
                                   description="(admin) the tenant whose VIP this is")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(Strict):
    name: Name
    token: Annotated[str, Field(min_length=24, max_length=256, pattern=r"^[A-Za-z0-9._~-]+$")]


class TenantOut(Strict):
    name: str


class VipIn(Strict):
    name: Name
    tenant: Name | None = None
    address: IPv4
    endpoints: Annotated[list[Endpoint], Field(min_length=1)]
    rate_limit_pps: Annotated[int, Field(ge=1, le=MAX_RATE_LIMIT_PPS), JsonInteger] | None = None


class BackendPatch(Strict):
    weight: Annotated[int, Field(ge=0, le=1000), JsonInteger] | None = None
    state: BackendState | None = None


class OperationOut(Strict):
    op_id: str
    kind: str
    target: str
    generation: int
    status: Literal["committed", "programmed"]
    committed_at: float
    programmed_at: float | None = None
    affected_nodes: list[str] = []


class FieldError(Strict):
    field: str
    error: str


# a port in a URL path arrives as text: converted (the bodies' ports are strict integers)
PathPort = Annotated[int, Field(ge=1, le=65535)]


class SnatBlockOut(Strict):
    dip: str
    vip: str
    start: int
    end: int


class SnatRequestIn(Strict):
    dip: IPv4


class SnatReleaseIn(Strict):
    dip: IPv4
    start: Annotated[int, Field(ge=0, le=65535), JsonInteger]


class SlotTableOut(Strict):
    """An endpoint's lookup table of new connections (slot_table.py): `counts`, each DIP's
    share of the 65,536 slots; `whole`, each of the 256 bins' DIP (an index into `dips`; -1
    for a split bin); `split`, a split bin's runs as [DIP index, length, ...] over its
    sub-slot positions. Empty when no backend takes new connections."""
    dips: list[str]
    counts: dict[str, int]
    whole: list[int]
    split: dict[str, list[int]]


class DrainIn(Strict):
    deadline_s: Annotated[int, Field(ge=1, le=7 * 86400), JsonInteger] | None = None


class RateLimitIn(Strict):
    rate_limit_pps: Annotated[int, Field(ge=1, le=MAX_RATE_LIMIT_PPS), JsonInteger] | None


class NodeOut(Strict):
    """A Mux or host of the inventory, with the config generation each of its bridges last
    confirmed to the leader (null: not programmed by this replica, or not connected)."""

    name: str
    underlay_address: str
    datapath_ids: dict[str, str]
    programmed_generation: dict[str, int | None]
    vms: list[dict[str, Any]] | None = None
    draining: bool | None = Field(None, description="Muxes: taken out of service "
                                  "(withdraws its VIPs from BGP, keeps forwarding)")
    drained: bool | None = Field(None, description="Muxes being drained: no VIP packet "
                                 "reached it for 2 s after the withdrawal (known to the leader)")


class HealthReport(Strict):
    results: Annotated[list[HealthResult], Field(min_length=1, max_length=1024)]


class ErrorOut(Strict):
    """Every error: what is wrong, and the field it is about (dotted path into the request)."""

    error: str
    field: str = ""
    op_id: str | None = None  # on a 503: retry with this Operation-Id, or look it up later
    details: list[FieldError] = []


class ClusterOut(Strict):
    self: str
    state: str
    leader: str | None
    term: int
    commit_index: int
    last_applied: int
    has_quorum: bool
    members: list[str]
    generation: int


class ManagerService(Interface):
    """What the API needs from a Manager replica (Raft-backed in production)."""

    admin_token_sha256: str

    @property
    def state(self) -> ClusterState: ...

    def status(self) -> dict[str, Any]: ...

    def propose(self, command: dict[str, Any], op_id: str) -> dict[str, Any]: ...

    def programmed_at(self, op: Operation) -> float | None: ...

    def relay_to_leader(self, path: str, token: str) -> tuple[int, Any] | None: ...

    def programmed_generations(self) -> dict[tuple[str, str], int]: ...

    def snat_hold_totals(self) -> dict[str, int]: ...

    mux_watch: MuxWatch


@dataclass(frozen=True)
class Caller:
    role: Literal["admin", "tenant", "agent"]
    tenant: str | None  # for an agent: the host it speaks for
    token: str
    op_id: str | None = None  # the request's Operation-Id header, if any


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422, 503)}


class AllowHeader:
    """A 405 names the methods the path does allow (RFC 9110 15.5.6). Plain ASGI: starlette's
    BaseHTTPMiddleware cost every request (config writes too) a task and a stream."""

    def __init__(self, app: ASGIApp, routes: Callable[[], list[Any]]):
        self.app, self.routes = app, routes

    def allowed(self, path: str) -> str:
        methods: set[str] = set()
        for route in self.routes():
            if isinstance(route, APIRoute):
                match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
                if match != Match.NONE:
                    methods |= route.methods or set()
        return ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_naming_methods(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                MutableHeaders(scope=message)["Allow"] = self.allowed(scope["path"])
            await send(message)

        await self.app(scope, receive, send_naming_methods)


def create_app(service: ManagerService, now: Callable[[], float] = time.time) -> FastAPI:
    app = FastAPI(title="Ananta Manager", version="1", responses=ERRORS)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and Starlette's
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail)}
        return JSONResponse(ErrorOut(**detail).model_dump(exclude_defaults=True),
                            status_code=exc.status_code, headers=exc.headers)

    app.add_middleware(AllowHeader, routes=lambda: app.routes)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [FieldError(field=".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                              error=e["msg"]) for e in exc.errors()]
        body = ErrorOut(error=details[0].error if details else "invalid request",
                        field=details[0].field if details else "", details=details)
        return JSONResponse(body.model_dump(exclude_defaults=True), status_code=422)
    bearer = HTTPBearer(auto_error=False)
    registry = CollectorRegistry()
    g_generation = Gauge("ananta_config_generation", "config generation", registry=registry)
    g_vips = Gauge("ananta_vips", "VIPs", registry=registry)
    g_leader = Gauge("ananta_raft_is_leader", "1 on the Raft leader", registry=registry)
    g_term = Gauge("ananta_raft_term", "Raft term", registry=registry)
    g_commit = Gauge("ananta_raft_commit_index", "Raft commit index", registry=registry)
    class MuxCounters(Collector):
        """Per-VIP and per-endpoint counters read from the Muxes' flows (on the leader)."""

        def collect(self) -> Any:
            for (name, help_text, label), samples in counter_samples(
                    service.mux_watch.all_counters()).items():
                family = CounterMetricFamily(name, help_text, labels=[label, "mux"])
                for labels, value in samples:
                    family.add_metric([labels[label], labels["mux"]], value)
                yield family

    registry.register(MuxCounters())

    class SnatHoldCounters(Collector):
        """VM packets the leader held while their host waited for a SNAT block."""

        def collect(self) -> Any:
            family = CounterMetricFamily(
                "ananta_snat_held_packets", "VM packets held for a SNAT block, by outcome "
                "(held; released back to the host; dropped: queue full, refused, too late)",
                labels=["outcome"])
            for outcome, value in sorted(service.snat_hold_totals().items()):
                family.add_metric([outcome], value)
            yield family

    registry.register(SnatHoldCounters())
    g_switch = Gauge("ananta_switch_programmed_generation",
                     "config generation each switch confirmed (leader only)",
                     ["node", "bridge"], registry=registry)
    c_writes = Counter("ananta_api_writes", "REST writes by command and HTTP status",
                       ["kind", "status"], registry=registry)
    h_commit = Histogram("ananta_api_commit_seconds", "REST write -> committed",
                         buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 3),
                         registry=registry)

    # The checks are coroutines: they run on the event loop, not on a worker thread each
    async def caller(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                     operation_id: Annotated[str, Header(
                         alias="Operation-Id", pattern=r"^[0-9a-f]{32}$")] = "") -> Caller:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, {"error": "a bearer token is required"},
                                headers={"WWW-Authenticate": "Bearer"})
        digest = sha256(creds.credentials)
        if hmac.compare_digest(digest, service.admin_token_sha256):
            return Caller("admin", None, creds.credentials, operation_id or None)
        tenant = service.state.tenant_of_token.get(digest)  # (a digest: no timing to learn)
        if tenant is not None:
            return Caller("tenant", tenant, creds.credentials, operation_id or None)
        for host in list(service.state.inventory.hosts):
            if host.agent_token_sha256 and hmac.compare_digest(digest, host.agent_token_sha256):
                return Caller("agent", host.name, creds.credentials, operation_id or None)
        raise HTTPException(401, {"error": "unknown token"},
                            headers={"WWW-Authenticate": "Bearer"})

    async def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role != "admin":
            raise HTTPException(403, {"error": "this needs the admin token"})
        return who

    async def user(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role == "agent":
            raise HTTPException(403, {"error": "a host agent token only reports health"})
        return who

    def agent_of(who: Caller, host: str) -> None:
        if who.role != "agent" or who.tenant != host:
            LOG.warning("refused: %s token speaking for host %r", who.role, host)
            raise HTTPException(403, {"error": f"only host {host!r}'s agent token may do this",
                                      "field": "name"})

    def tenant_of(who: Caller, tenant: str | None) -> str:
        """The tenant a request acts for: a tenant token's own, or the admin's choice."""
        if who.role == "tenant":
            if tenant and tenant != who.tenant:
                raise HTTPException(403, {"error": "a tenant acts only on its own VIPs",
                                          "field": "tenant"})
            return str(who.tenant)
        return tenant or "default"

    def write(who: Caller, command: dict[str, Any]) -> OperationOut:
        """Propose, wait for the commit. The operation id is the caller's `Operation-Id`
        header when given, so a write retried after a 503 is applied at most once."""
        from ananta.controller.replication import NotCommitted

        op_id = who.op_id or uuid.uuid4().hex
        started = time.monotonic()
        try:
            result = service.propose(command, op_id)
        except NotCommitted as exc:
            c_writes.labels(command["op"], "503").inc()
            raise HTTPException(503, {"error": str(exc), "op_id": op_id}) from None
        h_commit.observe(time.monotonic() - started)
        c_writes.labels(command["op"], str(result["status"])).inc()
        if not result["ok"]:
            raise HTTPException(result["status"], {"error": result["error"],
                                                   "field": result.get("path", "")})
        op = service.state.operations.get(result["op_id"])
        assert op is not None
        return operation_out(op)

    def operation_out(op: Operation) -> OperationOut:
        programmed = (service.programmed_at(op) if op.affected_nodes else op.proposed_at)
        return OperationOut(
            op_id=op.op_id, kind=op.kind, target=op.target, generation=op.generation,
            status="programmed" if programmed is not None else "committed",
            committed_at=op.proposed_at, programmed_at=programmed,
            affected_nodes=list(op.affected_nodes))

    Who = Annotated[Caller, Depends(user)]
    Admin = Annotated[Caller, Depends(admin)]
    Any_ = Annotated[Caller, Depends(caller)]

    @app.get(f"{API}/cluster", response_model=ClusterOut, tags=["cluster"])
    def cluster(who: Who) -> dict[str, Any]:
        return service.status()

    @app.get(f"{API}/tenants", response_model=list[TenantOut], tags=["tenants"])
    def tenants(who: Admin) -> list[TenantOut]:
        return [TenantOut(name=t) for t in sorted(service.state.tenants)]

    @app.post(f"{API}/tenants", response_model=OperationOut, status_code=201, tags=["tenants"])
    def create_tenant(body: TenantIn, who: Admin) -> OperationOut:
        if body.name in service.state.tenants:
            raise HTTPException(409, {"error": f"tenant {body.name!r} exists", "field": "name"})
        return write(who, {"op": "put_tenant",
                      "tenant": {"name": body.name, "token_sha256": sha256(body.token)}})

    @app.delete(f"{API}/tenants/{{name}}", response_model=OperationOut, tags=["tenants"])
    def delete_tenant(name: Name, who: Admin) -> OperationOut:
        return write(who, {"op": "delete_tenant", "name": name})

    @app.get(f"{API}/inventory", response_model=Inventory, tags=["inventory"])
    def inventory(who: Admin) -> Inventory:
        return service.state.inventory

    @app.put(f"{API}/inventory", response_model=OperationOut, tags=["inventory"])
    def put_inventory(body: Inventory, who: Admin) -> OperationOut:
        return write(who, {"op": "set_inventory", "inventory": body.model_dump(mode="json")})

    def nodes(kind: Literal["muxes", "hosts"]) -> list[NodeOut]:
        done = service.programmed_generations()
        draining = service.state.draining_muxes
        out = []
        for node in getattr(service.state.inventory, kind):
            data = node.model_dump(mode="json")
            mux = kind == "muxes"
            out.append(NodeOut(
                name=node.name, underlay_address=node.underlay_address,
                datapath_ids=data["datapath_ids"], vms=data.get("vms"),
                programmed_generation={b: done.get((node.name, b)) for b in ("int", "phy")},
                draining=node.name in draining if mux else None,
                drained=service.mux_watch.drained(node.name) if mux else None))
        return out

    @app.get(f"{API}/muxes", response_model=list[NodeOut], response_model_exclude_none=True,
             tags=["inventory"])
    def muxes(who: Admin) -> Any:
        if service.status()["state"] != "leader":  # what the Muxes do is known to the leader
            relayed = service.relay_to_leader(f"{API}/muxes", who.token)
            if relayed is not None and relayed[0] == 200:
                return relayed[1]
        return nodes("muxes")

    @app.post(f"{API}/muxes/{{name}}/drain", response_model=OperationOut, tags=["inventory"])
    def drain_mux(name: Name, who: Admin) -> OperationOut:
        """Take a Mux out of service: it withdraws its VIPs from BGP and keeps forwarding what
        routers still send; `drained` in GET /muxes says when they stopped."""
        return write(who, {"op": "set_mux_drain", "mux": name, "draining": True})

    @app.delete(f"{API}/muxes/{{name}}/drain", response_model=OperationOut, tags=["inventory"])
    def undrain_mux(name: Name, who: Admin) -> OperationOut:
        """Put a drained Mux back into service: it announces its VIPs again."""
        return write(who, {"op": "set_mux_drain", "mux": name, "draining": False})

    @app.get(f"{API}/hosts", response_model=list[NodeOut], tags=["inventory"])
    def hosts(who: Admin) -> list[NodeOut]:
        return nodes("hosts")

    @app.get(f"{API}/hosts/{{name}}/checks", response_model=list[ProbeTarget], tags=["health"])
    def checks(name: Name, who: Any_) -> list[ProbeTarget]:
        """What host `name`'s agent must probe: each backend on its VMs, with its check."""
        agent_of(who, name)
        return probe_targets(service.state, name)

    @app.post(f"{API}/hosts/{{name}}/health", response_model=OperationOut, tags=["health"])
    def report_health(name: Name, body: HealthReport, who: Any_) -> OperationOut:
        agent_of(who, name)
        return write(who, {"op": "report_health", "host": name,
                           "results": [r.model_dump(mode="json") for r in body.results]})

    @app.post(f"{API}/hosts/{{name}}/snat-requests", response_model=OperationOut,
              tags=["snat"])
    def request_snat_block(name: Name, body: SnatRequestIn, who: Any_) -> OperationOut:
        """A host agent asks for one more SNAT block for one of its DIPs (429: the DIP or its
        tenant has as many as it may; 409: the VIP's port space is full)."""
        agent_of(who, name)
        return write(who, {"op": "request_snat_block", "host": name, "dip": body.dip})

    @app.post(f"{API}/hosts/{{name}}/snat-releases", response_model=OperationOut,
              tags=["snat"])
    def release_snat_block(name: Name, body: SnatReleaseIn, who: Any_) -> OperationOut:
        """A host agent gives back an idle extra SNAT block of one of its DIPs."""
        agent_of(who, name)
        return write(who, {"op": "release_snat_block", "host": name, "dip": body.dip,
                           "start": body.start})

    @app.get(f"{API}/hosts/{{name}}/snat", response_model=list[SnatBlockOut], tags=["snat"])
    def host_snat_blocks(name: Name, who: Any_) -> list[SnatBlockOut]:
        """The SNAT blocks of the host's DIPs (its agent watches how full they are)."""
        if who.role != "admin":
            agent_of(who, name)
        host = next((h for h in service.state.inventory.hosts if h.name == name), None)
        if host is None:
            raise HTTPException(404, {"error": f"no host {name!r}", "field": "name"})
        return [SnatBlockOut(dip=b.dip, vip=b.vip, start=b.start, end=b.end)
                for vm in host.vms for b in service.state.snat.get(vm.address, ())]

    @app.get(f"{API}/snat", response_model=list[SnatBlockOut], tags=["snat"])
    def snat_blocks(who: Admin) -> list[SnatBlockOut]:
        """Every DIP's SNAT port blocks: its outbound connections leave as VIP:port in them."""
        return [SnatBlockOut(dip=b.dip, vip=b.vip, start=b.start, end=b.end)
                for dip in sorted(service.state.snat) for b in service.state.snat[dip]]

    @app.get(f"{API}/health", response_model=list[str], tags=["health"])
    def health(who: Admin) -> list[str]:
        """The backends (ADDRESS:PORT) their host agents report down."""
        return sorted(service.state.down)

    @app.get(f"{API}/vips", response_model=list[Vip], tags=["vips"])
    def list_vips(who: Who) -> list[Vip]:
        vips = service.state.services().vips
        return [v for v in vips if who.role == "admin" or v.tenant == who.tenant]

    @app.post(f"{API}/vips", response_model=OperationOut, status_code=201, tags=["vips"])
    def create_vip(body: VipIn, who: Who) -> OperationOut:
        tenant = tenant_of(who, body.tenant)
        vip = {**body.model_dump(mode="json"), "tenant": tenant}
        return write(who, {"op": "create_vip", "vip": vip})

    def own_vip(who: Caller, name: str, tenant: str | None) -> Vip:
        t = tenant_of(who, tenant)
        vip = service.state.vips.get((t, name))
        if vip is None:
            raise HTTPException(404, {"error": f"no VIP {name!r}", "field": "name"})
        return vip

    @app.get(f"{API}/vips/{{name}}", response_model=Vip, tags=["vips"])
    def get_vip(name: Name, who: Who, tenant: TenantQuery = "") -> Vip:
        return own_vip(who, name, tenant)

    @app.delete(f"{API}/vips/{{name}}", response_model=OperationOut, tags=["vips"])
    def delete_vip(name: Name, who: Who, tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "delete_vip", "tenant": vip.tenant, "name": vip.name})

    @app.put(f"{API}/vips/{{name}}/rate-limit", response_model=OperationOut, tags=["vips"])
    def set_rate_limit(name: Name, body: RateLimitIn, who: Who,
                       tenant: TenantQuery = "") -> OperationOut:
        """Limit the packets per second every Mux forwards to the VIP's endpoints (an
        OpenFlow meter on each Mux; packets above the rate are dropped); null removes it."""
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "set_vip_rate_limit", "tenant": vip.tenant, "vip": vip.name,
                           "rate_limit_pps": body.rate_limit_pps})

    @app.post(f"{API}/vips/{{name}}/endpoints", response_model=OperationOut, status_code=201,
              tags=["vips"])
    def add_endpoint(name: Name, body: Endpoint, who: Who,
                     tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "add_endpoint", "tenant": vip.tenant, "vip": vip.name,
                      "endpoint": body.model_dump(mode="json")})

    @app.delete(f"{API}/vips/{{name}}/endpoints/{{protocol}}/{{port}}",
                response_model=OperationOut, tags=["vips"])
    def remove_endpoint(name: Name, protocol: Protocol, port: PathPort, who: Who,
                        tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "remove_endpoint", "tenant": vip.tenant, "vip": vip.name,
                      "protocol": protocol, "port": port})

    @app.get(f"{API}/vips/{{name}}/endpoints/{{protocol}}/{{port}}/slots",
             response_model=SlotTableOut, tags=["vips"])
    def endpoint_slots(name: Name, protocol: Protocol, port: PathPort, who: Who,
                       tenant: TenantQuery = "") -> SlotTableOut:
        """Which DIP each slot of the endpoint's table sends new connections to: a packet's
        slot is the datapath's hash of its 5-tuple (see docs/architecture.md)."""
        vip = own_vip(who, name, tenant)
        if not any(ep.protocol == protocol and ep.port == port for ep in vip.endpoints):
            raise HTTPException(404, {"error": f"no endpoint {protocol}/{port}", "field": "port"})
        table = service.state.slot_tables.get(endpoint_key(vip.address, protocol, port))
        if table is None:
            return SlotTableOut(dips=[], counts={}, whole=[], split={})
        return SlotTableOut(**encode_table(table), counts=table.counts())

    @app.post(f"{API}/vips/{{name}}/endpoints/{{protocol}}/{{port}}/slots/rebuild",
              response_model=OperationOut, tags=["vips"])
    def rebuild_endpoint_slots(name: Name, protocol: Protocol, port: PathPort, who: Who,
                               tenant: TenantQuery = "") -> OperationOut:
        """Build the endpoint's slot table afresh: the fewest split bins (table-4 flows on
        every Mux), after a long history of changes split it. This moves new connections'
        choices of backend; established connections keep theirs (each Mux's conntrack)."""
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "rebuild_slot_table", "tenant": vip.tenant, "vip": vip.name,
                           "protocol": protocol, "port": port})

    backends = f"{API}/vips/{{name}}/endpoints/{{protocol}}/{{port}}/backends"

    @app.post(backends, response_model=OperationOut, status_code=201, tags=["backends"])
    def add_backend(name: Name, protocol: Protocol, port: PathPort, body: Backend, who: Who,
                    tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "add_backend", "tenant": vip.tenant, "vip": vip.name,
                      "protocol": protocol, "port": port,
                      "backend": body.model_dump(mode="json")})

    @app.patch(f"{backends}/{{address}}", response_model=OperationOut, tags=["backends"])
    def update_backend(name: Name, protocol: Protocol, port: PathPort, address: IPv4,
                       body: BackendPatch, who: Who, tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        if body.weight is None and body.state is None:
            raise HTTPException(422, {"error": "give weight and/or state", "field": "body"})
        return write(who, {"op": "update_backend", "tenant": vip.tenant, "vip": vip.name,
                      "protocol": protocol, "port": port, "address": address,
                      "weight": body.weight, "state": body.state})

    @app.post(f"{backends}/{{address}}/drain", response_model=OperationOut, tags=["backends"])
    def drain_backend(name: Name, protocol: Protocol, port: PathPort, address: IPv4, who: Who,
                      tenant: TenantQuery = "", body: DrainIn | None = None) -> OperationOut:
        """No new connections go to the backend; established ones continue until they end,
        or until `deadline_s` seconds from now, when it becomes inactive (what is left of its
        connections is cut)."""
        vip = own_vip(who, name, tenant)
        until = now() + body.deadline_s if body and body.deadline_s else None
        return write(who, {"op": "update_backend", "tenant": vip.tenant, "vip": vip.name,
                           "protocol": protocol, "port": port, "address": address,
                           "state": "draining", "drain_until": until})

    @app.delete(f"{backends}/{{address}}", response_model=OperationOut, tags=["backends"])
    def remove_backend(name: Name, protocol: Protocol, port: PathPort, address: IPv4, who: Who,
                       tenant: TenantQuery = "") -> OperationOut:
        vip = own_vip(who, name, tenant)
        return write(who, {"op": "remove_backend", "tenant": vip.tenant, "vip": vip.name,
                      "protocol": protocol, "port": port, "address": address})

    @app.get(f"{API}/operations/{{op_id}}", response_model=OperationOut, tags=["operations"])
    def operation(op_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")], who: Who,
                  response: Response) -> Any:
        op = service.state.operations.get(op_id)
        if op is None or (who.role == "tenant" and op.tenant != who.tenant):
            raise HTTPException(404, {"error": f"no operation {op_id}", "field": "op_id"})
        out = operation_out(op)
        if out.status == "committed" and service.status()["state"] != "leader":
            relayed = service.relay_to_leader(f"{API}/operations/{op_id}", who.token)
            if relayed is not None and relayed[0] == 200:
                return relayed[1]
        return out

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        st = service.status()
        g_generation.set(st["generation"])
        g_vips.set(len(service.state.vips))
        g_leader.set(1 if st["state"] == "leader" else 0)
        g_term.set(st["term"])
        g_commit.set(st["commit_index"])
        for (node, bridge), generation in service.programmed_generations().items():
            g_switch.labels(node, bridge).set(generation)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
