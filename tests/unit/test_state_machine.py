"""The replicated state machine: deterministic, and a refused command changes nothing."""

from __future__ import annotations

import copy
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ananta.controller.state import (
    AddBackend,
    ClusterState,
    CreateVip,
    DeleteTenant,
    DeleteVip,
    Envelope,
    PutTenant,
    RemoveBackend,
    SetInventory,
    Tenant,
    UpdateBackend,
    apply_command,
    expired_drains,
)
from tests.unit.fixtures import default_inventory, demo_services

HASH = "0" * 64


def envelope(command: object, op_id: str | None = None) -> Envelope:
    return Envelope.model_validate({"op_id": op_id or uuid.uuid4().hex, "proposed_at": 1.0,
                                    "command": command.model_dump()})  # type: ignore[attr-defined]


def fresh() -> ClusterState:
    state = ClusterState()
    assert apply_command(state, envelope(SetInventory(inventory=default_inventory())))["ok"]
    for name, digest in (("demo", HASH), ("other", "1" * 64)):
        assert apply_command(state, envelope(PutTenant(tenant=Tenant(name=name,
                                                                     token_sha256=digest))))["ok"]
    return state


def web(tenant: str = "demo", name: str = "web", address: str = "203.0.113.10"):  # type: ignore[no-untyped-def]
    vip = demo_services().vips[0]
    return vip.model_copy(update={"tenant": tenant, "name": name, "address": address})


def snapshot(state: ClusterState) -> object:
    return (state.generation, state.services().model_dump(), sorted(state.tenants),
            list(state.operations))


def test_create_then_refusals_change_nothing() -> None:
    state = fresh()
    ok = apply_command(state, envelope(CreateVip(vip=web())))
    assert ok["ok"] and ok["generation"] == state.generation
    before = snapshot(state)
    cases = [
        (CreateVip(vip=web()), 409, "name"),  # same tenant and name
        (CreateVip(vip=web("other", "web2")), 409, "endpoints[0]"),  # same VIP:proto:port
        (CreateVip(vip=web("nobody", "x", "203.0.113.20")), 404, "tenant"),
        (CreateVip(vip=web("demo", "far", "192.0.2.1")), 409, "address"),
        (DeleteVip(tenant="other", name="web"), 404, "name"),  # another tenant's VIP
        (AddBackend(tenant="demo", vip="web", protocol="tcp", port=80,
                    backend={"address": "10.1.0.11", "port": 9000}), 409,
         "endpoints[0].backends[4].address"),
        (AddBackend(tenant="demo", vip="web", protocol="tcp", port=80,
                    backend={"address": "10.7.7.7", "port": 9000}), 409,
         "endpoints[0].backends[4].address"),
        (RemoveBackend(tenant="demo", vip="web", protocol="tcp", port=81,
                       address="10.1.0.11"), 404, "port"),
        (DeleteTenant(name="demo"), 409, "name"),
    ]
    for cmd, status, path in cases:
        result = apply_command(state, envelope(cmd))
        assert (result["ok"], result["status"], result["path"]) == (False, status, path), result
        assert snapshot(state) == before


def test_backend_lifecycle_and_generation() -> None:
    state = fresh()
    apply_command(state, envelope(CreateVip(vip=web())))
    g = state.generation
    r = apply_command(state, envelope(UpdateBackend(tenant="demo", vip="web", protocol="tcp",
                                                    port=80, address="10.1.0.12",
                                                    state="draining", weight=0)))
    assert r["ok"] and state.generation == g + 1
    be = state.vip("demo", "web").endpoints[0].backends[1]
    assert (be.state, be.weight) == ("draining", 0)
    r = apply_command(state, envelope(RemoveBackend(tenant="demo", vip="web", protocol="tcp",
                                                    port=80, address="10.1.0.12")))
    assert r["ok"] and len(state.vip("demo", "web").endpoints[0].backends) == 3


def test_a_retried_operation_is_applied_once() -> None:
    state = fresh()
    env = envelope(CreateVip(vip=web()), op_id="ab" * 16)
    first = apply_command(state, env)
    again = apply_command(state, env)
    assert first == again and len(state.vips) == 1


COMMANDS = [
    CreateVip(vip=web()),
    CreateVip(vip=web("other", "api", "203.0.113.11")),
    CreateVip(vip=web("other", "dup", "203.0.113.10")),
    DeleteVip(tenant="demo", name="web"),
    AddBackend(tenant="demo", vip="web", protocol="tcp", port=80,
               backend={"address": "10.1.0.11", "port": 9000}),
    RemoveBackend(tenant="demo", vip="web", protocol="tcp", port=80, address="10.2.0.11"),
    UpdateBackend(tenant="other", vip="api", protocol="tcp", port=80, address="10.1.0.11",
                  weight=7),
    DeleteTenant(name="other"),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(range(len(COMMANDS))), max_size=12))
def test_replicas_applying_the_same_log_agree(indices: list[int]) -> None:
    log = [envelope(copy.deepcopy(COMMANDS[i])) for i in indices]
    a, b = fresh(), fresh()
    results_a = [apply_command(a, e) for e in log]
    results_b = [apply_command(b, e) for e in log]
    assert results_a == results_b
    assert a.services() == b.services() and a.generation == b.generation
    # every VIP in the state is valid against the inventory
    from ananta.controller.model import check_services

    assert check_services(a.services(), a.inventory) == []


def test_a_snapshot_restores_the_same_state() -> None:
    import pickle

    state = fresh()
    for cmd in COMMANDS[:3]:
        apply_command(state, envelope(cmd))
    restored = pickle.loads(pickle.dumps(state))
    assert snapshot(restored) == snapshot(state)
    assert restored.endpoint_owner == state.endpoint_owner and restored.index == state.index
    assert restored.vips == state.vips and restored.operations == state.operations
    # and it goes on applying commands exactly like the original
    for i, cmd in enumerate(COMMANDS[3:]):
        same = envelope(cmd, op_id=f"{i:032x}")
        assert apply_command(restored, same) == apply_command(state, same)
    assert snapshot(restored) == snapshot(state)


def test_a_drain_deadline_makes_the_backend_inactive_once() -> None:
    state = fresh()
    assert apply_command(state, envelope(CreateVip(vip=web())))["ok"]
    dip = web().endpoints[0].backends[0].address
    drain = UpdateBackend(tenant="demo", vip="web", protocol="tcp", port=80, address=dip,
                          state="draining", drain_until=1000.0)
    assert apply_command(state, envelope(drain))["ok"]
    assert expired_drains(state, now=999.0) == []
    ((op_id, command),) = expired_drains(state, now=1000.5)
    restored = copy.deepcopy(state)  # (a snapshot keeps the deadline)
    assert expired_drains(restored, now=1000.5) == [(op_id, command)]
    for _ in range(2):  # proposed twice (a retry, another replica): applied once
        assert apply_command(state, Envelope.model_validate(
            {"op_id": op_id, "proposed_at": 1000.5, "command": command}))["ok"]
    be = state.vips[("demo", "web")].endpoints[0].backends[0]
    assert (be.state, be.drain_until) == ("inactive", None)
    assert expired_drains(state, now=2000.0) == [] and not state.drain_deadlines


def test_tokens_name_one_tenant_each_through_puts_deletes_and_snapshots() -> None:
    """The API finds a token's tenant by its digest (an index kept by the state machine):
    a digest another tenant holds is refused and changes nothing; replacing a tenant's
    token or deleting the tenant retires the old one; a restored snapshot has the index."""
    import pickle

    state = fresh()
    assert state.tenant_of_token == {HASH: "demo", "1" * 64: "other"}
    before = copy.deepcopy(state.__getstate__())
    refused = apply_command(state, envelope(PutTenant(tenant=Tenant(name="third",
                                                                    token_sha256=HASH))))
    assert (refused["status"], refused["path"]) == (409, "token")
    assert state.__getstate__() == before and "third" not in state.tenants
    assert apply_command(state, envelope(PutTenant(tenant=Tenant(name="other",
                                                                 token_sha256="2" * 64))))["ok"]
    assert state.tenant_of_token == {HASH: "demo", "2" * 64: "other"}
    assert apply_command(state, envelope(DeleteTenant(name="other")))["ok"]
    assert state.tenant_of_token == {HASH: "demo"}
    assert pickle.loads(pickle.dumps(state)).tenant_of_token == {HASH: "demo"}
