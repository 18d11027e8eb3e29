"""DIP health: host agents report their own VMs' backends; the Muxes stop choosing a down one."""

from __future__ import annotations

import hashlib
import uuid

from fastapi.testclient import TestClient

from ananta.controller.api import create_app
from ananta.controller.compile_mux import compile_mux_int
from ananta.controller.health import probe_targets
from ananta.controller.state import ClusterState, Envelope, ReportHealth, apply_command
from tests.unit.fixtures import default_inventory, demo_services
from tests.unit.local_service import ADMIN_TOKEN, LocalService
from tests.unit.test_state_machine import envelope

HV1_TOKEN = "hv1-agent-token-0123456789abcdef"


def buckets(state: ClusterState) -> set[str]:
    program = compile_mux_int(state.services(), state.inventory, frozenset(state.down),
                              tables=state.slot_tables)
    (group,) = program.groups
    return {str(a.value) for b in group.buckets for a in b.actions
            if getattr(a, "field", "") == "tunnel_id"}


def seeded() -> ClusterState:
    state = ClusterState()
    inv = default_inventory().model_dump(mode="json")
    inv["hosts"][0]["agent_token_sha256"] = hashlib.sha256(HV1_TOKEN.encode()).hexdigest()
    assert apply_command(state, envelope_of({"op": "set_inventory", "inventory": inv}))["ok"]
    vip = demo_services().vips[0].model_dump(mode="json") | {"tenant": "default"}
    assert apply_command(state, envelope_of({"op": "create_vip", "vip": vip}))["ok"]
    return state


def envelope_of(command: dict[str, object]) -> Envelope:
    return Envelope.model_validate({"op_id": uuid.uuid4().hex, "proposed_at": 0.0,
                                    "command": command})


def report(host: str, address: str, up: bool) -> ReportHealth:
    return ReportHealth(host=host, results=[{"address": address, "port": 8080, "up": up}])


def test_a_down_backend_leaves_every_mux_group_and_comes_back() -> None:
    state = seeded()
    assert len(buckets(state)) == 4
    assert apply_command(state, envelope(report("hv1", "10.1.0.12", False)))["ok"]
    assert state.down == {"10.1.0.12:8080"} and len(buckets(state)) == 3
    assert apply_command(state, envelope(report("hv1", "10.1.0.12", True)))["ok"]
    assert state.down == set() and len(buckets(state)) == 4


def test_a_host_cannot_report_another_hosts_vm() -> None:
    state = seeded()
    generation = state.generation
    result = apply_command(state, envelope(report("hv1", "10.2.0.11", False)))
    assert (result["ok"], result["status"], result["path"]) == (False, 403, "results.0.address")
    assert state.down == set() and state.generation == generation


def test_probe_targets_are_the_hosts_own_backends_with_their_check() -> None:
    state = seeded()
    targets = probe_targets(state, "hv1")
    assert [(t.address, t.port) for t in targets] == [("10.1.0.11", 8080), ("10.1.0.12", 8080)]
    assert targets[0].check.type == "tcp" and targets[0].check.fall == 2
    assert probe_targets(state, "nope") == []


def test_api_health_routes_need_that_hosts_agent_token() -> None:
    service = LocalService()
    service._state = seeded()
    client = TestClient(create_app(service))
    agent = {"Authorization": f"Bearer {HV1_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert len(client.get("/api/v1/hosts/hv1/checks", headers=agent).json()) == 2
    assert client.get("/api/v1/hosts/hv2/checks", headers=agent).status_code == 403
    assert client.get("/api/v1/hosts/hv1/checks", headers=admin).status_code == 403
    body = {"results": [{"address": "10.1.0.11", "port": 8080, "up": False}]}
    r = client.post("/api/v1/hosts/hv1/health", json=body, headers=agent)
    assert r.status_code == 200 and r.json()["affected_nodes"] == ["mux1", "mux2"]
    assert client.get("/api/v1/health", headers=admin).json() == ["10.1.0.11:8080"]
    assert client.post("/api/v1/hosts/hv2/health", json=body, headers=agent).status_code == 403
    assert client.get("/api/v1/vips", headers=agent).status_code == 403  # agents only report
    bad = {"results": [{"address": "10.2.0.11", "port": 8080, "up": False}]}
    r = client.post("/api/v1/hosts/hv1/health", json=bad, headers=agent)
    assert r.status_code == 403 and r.json()["field"] == "results.0.address"
