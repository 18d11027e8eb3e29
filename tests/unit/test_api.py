"""The REST API: authorization per tenant, validation naming the field, no change on error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ananta.controller.api import create_app
from tests.unit.fixtures import default_inventory, demo_services
from tests.unit.local_service import ADMIN_TOKEN, LocalService

DEMO_TOKEN = "demo-token-0123456789abcdefgh"
OTHER_TOKEN = "other-token-0123456789abcdefg"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api() -> tuple[TestClient, LocalService]:
    service = LocalService()
    client = TestClient(create_app(service))
    admin = auth(ADMIN_TOKEN)
    r = client.put("/api/v1/inventory", json=default_inventory().model_dump(mode="json"),
                   headers=admin)
    assert r.status_code == 200, r.text
    for name, token in (("demo", DEMO_TOKEN), ("other", OTHER_TOKEN)):
        r = client.post("/api/v1/tenants", json={"name": name, "token": token}, headers=admin)
        assert r.status_code == 201, r.text
    return client, service


def web_body() -> dict[str, object]:
    vip = demo_services().vips[0].model_dump(mode="json")
    vip.pop("tenant")
    return vip


def test_tenant_creates_lists_and_deletes_its_vip(api: tuple[TestClient, LocalService]) -> None:
    client, service = api
    r = client.post("/api/v1/vips", json=web_body(), headers=auth(DEMO_TOKEN))
    assert r.status_code == 201, r.text
    op = r.json()
    assert op["status"] in ("committed", "programmed") and op["kind"] == "create_vip"
    assert sorted(op["affected_nodes"]) == ["hv1", "hv2", "mux1", "mux2"]
    assert op["status"] == "committed"  # no switch has confirmed it
    service.ledger.record("mux1", "int", op["generation"], 1.0)
    for node in ("mux1", "mux2", "hv1", "hv2"):
        for bridge in ("int", "phy"):
            service.ledger.record(node, bridge, op["generation"], 2.0)
    got = client.get(f"/api/v1/operations/{op['op_id']}", headers=auth(DEMO_TOKEN)).json()
    assert got["status"] == "programmed" and got["programmed_at"] == 2.0
    assert [v["name"] for v in client.get("/api/v1/vips", headers=auth(DEMO_TOKEN)).json()] == [
        "web"]
    assert client.get("/api/v1/vips", headers=auth(OTHER_TOKEN)).json() == []
    assert client.get("/api/v1/vips/web", headers=auth(OTHER_TOKEN)).status_code == 404
    assert client.delete("/api/v1/vips/web", headers=auth(OTHER_TOKEN)).status_code == 404
    assert client.delete("/api/v1/vips/web", headers=auth(DEMO_TOKEN)).status_code == 200
    assert service.state.vips == {}


def test_backend_add_drain_remove(api: tuple[TestClient, LocalService]) -> None:
    client, service = api
    h = auth(DEMO_TOKEN)
    body = web_body()
    body["endpoints"][0]["backends"] = body["endpoints"][0]["backends"][:2]  # type: ignore[index]
    assert client.post("/api/v1/vips", json=body, headers=h).status_code == 201
    base = "/api/v1/vips/web/endpoints/tcp/80/backends"
    r = client.post(base, json={"address": "10.2.0.11", "port": 8080, "weight": 50}, headers=h)
    assert r.status_code == 201, r.text
    assert client.post(f"{base}/10.2.0.11/drain", headers=h).status_code == 200
    be = service.state.vips[("demo", "web")].endpoints[0].backends[2]
    assert (be.address, be.weight, be.state) == ("10.2.0.11", 50, "draining")
    assert client.patch(f"{base}/10.2.0.11", json={"weight": 7}, headers=h).status_code == 200
    assert client.delete(f"{base}/10.2.0.11", headers=h).status_code == 200
    assert len(service.state.vips[("demo", "web")].endpoints[0].backends) == 2


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        (lambda b: b.update(address="300.1.1.1"), 422, "address"),
        (lambda b: b.update(address="192.0.2.1"), 409, "address"),
        (lambda b: b["endpoints"][0].update(port=0), 422, "port"),
        (lambda b: b["endpoints"][0]["backends"][0].update(weight=1001), 422, "weight"),
        (lambda b: b.update(colour="red"), 422, "colour"),
        (lambda b: b["endpoints"][0]["backends"].extend(
            [{"address": "10.1.0.11", "port": 1}] * 300), 422, "backends"),
        (lambda b: b.update(tenant="other"), 403, "tenant"),
    ],
)
def test_bad_vip_is_refused_and_changes_nothing(api, change, status, field) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    body = web_body()
    change(body)
    generation = service.state.generation
    r = client.post("/api/v1/vips", json=body, headers=auth(DEMO_TOKEN))
    assert r.status_code == status, r.text
    assert field in r.text
    assert service.state.generation == generation and service.state.vips == {}


def test_endpoint_taken_by_another_tenant_is_a_conflict(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    assert client.post("/api/v1/vips", json=web_body(), headers=auth(DEMO_TOKEN)).status_code == 201
    body = web_body() | {"name": "copy"}
    r = client.post("/api/v1/vips", json=body, headers=auth(OTHER_TOKEN))
    assert r.status_code == 409 and "duplicates" in r.json()["error"]
    assert list(service.state.vips) == [("demo", "web")]


def test_authentication_and_admin_only_routes(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    assert client.get("/api/v1/vips").status_code == 401
    assert client.get("/api/v1/vips", headers=auth("nope-nope-nope-nope-nope")).status_code == 401
    assert client.get("/api/v1/tenants", headers=auth(DEMO_TOKEN)).status_code == 403
    assert client.put("/api/v1/inventory", json={}, headers=auth(DEMO_TOKEN)).status_code == 403
    names = [t["name"] for t in client.get("/api/v1/tenants", headers=auth(ADMIN_TOKEN)).json()]
    assert names == ["demo", "other"]
    r = client.post("/api/v1/tenants", json={"name": "x", "token": "short"},
                    headers=auth(ADMIN_TOKEN))
    assert r.status_code == 422 and "token" in r.text


def test_a_method_the_path_does_not_take_is_405_naming_those_it_does(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    r = client.put("/api/v1/vips/web", headers=auth(DEMO_TOKEN))
    assert r.status_code == 405
    assert r.headers["Allow"] == "DELETE, GET"
    r = client.delete("/api/v1/cluster", headers=auth(DEMO_TOKEN))
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    assert "Allow" not in client.get("/api/v1/cluster", headers=auth(DEMO_TOKEN)).headers


def test_no_quorum_is_a_503_and_nothing_changes(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    service.quorum = False
    r = client.post("/api/v1/vips", json=web_body(), headers=auth(DEMO_TOKEN))
    assert r.status_code == 503 and "quorum" in r.json()["error"]
    assert service.state.vips == {}


def test_openapi_and_metrics(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert "/api/v1/vips" in spec["paths"] and "HTTPBearer" in str(spec["components"])
    text = client.get("/metrics").text
    assert "ananta_config_generation" in text and "ananta_raft_is_leader 1.0" in text
    assert 'ananta_api_writes_total{kind="put_tenant",status="200"} 2.0' in text
    assert "ananta_api_commit_seconds_bucket" in text
    assert 'ananta_snat_held_packets_total{outcome="released"} 0.0' in text


def test_a_write_retried_with_its_operation_id_is_applied_once(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    service.quorum = False
    op_id = "0123456789abcdef0123456789abcdef"
    headers = auth(DEMO_TOKEN) | {"Operation-Id": op_id}
    r = client.post("/api/v1/vips", json=web_body(), headers=headers)
    assert r.status_code == 503 and r.json()["op_id"] == op_id
    service.quorum = True
    first = client.post("/api/v1/vips", json=web_body(), headers=headers)
    assert first.status_code == 201 and first.json()["op_id"] == op_id
    again = client.post("/api/v1/vips", json=web_body(), headers=headers)
    assert again.status_code == 201 and again.json()["generation"] == first.json()["generation"]
    assert len(service.state.vips) == 1
    other = client.delete("/api/v1/vips/web", headers=headers)  # the id of another request
    assert other.status_code == 409 and other.json()["field"] == "Operation-Id"
    assert "create_vip" in other.json()["error"] and len(service.state.vips) == 1
    bad = client.post("/api/v1/vips", json=web_body(), headers=auth(DEMO_TOKEN) | {
        "Operation-Id": "not-hex"})
    assert bad.status_code == 422 and "Operation-Id" in bad.text
    body = web_body()
    body["endpoints"][0]["backends"][0]["drain_until"] = False  # a number, not a bool
    wrong = client.post("/api/v1/vips", json=body, headers=auth(DEMO_TOKEN))
    assert wrong.status_code == 422 and "drain_until" in wrong.json()["field"]


def test_muxes_and_hosts_with_their_programmed_generation(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    service.ledger.record("mux1", "int", 3, 1.0)
    muxes = client.get("/api/v1/muxes", headers=auth(ADMIN_TOKEN)).json()
    assert [m["name"] for m in muxes] == ["mux1", "mux2"]
    assert muxes[0]["programmed_generation"] == {"int": 3, "phy": None}
    hosts = client.get("/api/v1/hosts", headers=auth(ADMIN_TOKEN)).json()
    assert [vm["address"] for vm in hosts[0]["vms"]] == ["10.1.0.11", "10.1.0.12"]
    assert client.get("/api/v1/hosts", headers=auth(DEMO_TOKEN)).status_code == 403


def test_admin_drains_and_undrains_a_mux(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    admin = auth(ADMIN_TOKEN)
    assert client.post("/api/v1/muxes/mux1/drain", headers=auth(DEMO_TOKEN)).status_code == 403
    r = client.post("/api/v1/muxes/nomux/drain", headers=admin)
    assert r.status_code == 404 and r.json()["field"] == "mux", r.text
    assert client.post("/api/v1/muxes/mux1/drain", headers=admin).status_code == 200
    muxes = {m["name"]: m for m in client.get("/api/v1/muxes", headers=admin).json()}
    assert muxes["mux1"]["draining"] is True and muxes["mux2"]["draining"] is False
    assert "drained" not in muxes["mux1"]  # only the leader's os-ken app knows
    assert client.delete("/api/v1/muxes/mux1/drain", headers=admin).status_code == 200
    assert service.state.draining_muxes == set()


def test_a_tenant_limits_its_vip_and_bad_limits_are_refused(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    h = auth(DEMO_TOKEN)
    assert client.post("/api/v1/vips", json=web_body(), headers=h).status_code == 201
    url = "/api/v1/vips/web/rate-limit"
    for bad in (0, -5, 10_000_001, True, "100"):
        r = client.put(url, json={"rate_limit_pps": bad}, headers=h)
        assert r.status_code == 422 and r.json()["field"] == "rate_limit_pps", (bad, r.text)
    assert client.put(url, json={"rate_limit_pps": 100}, headers=auth(OTHER_TOKEN)
                      ).status_code == 404  # another tenant's VIP
    assert service.state.vips[("demo", "web")].rate_limit_pps is None
    assert client.put(url, json={"rate_limit_pps": 5000}, headers=h).status_code == 200
    assert service.state.vips[("demo", "web")].rate_limit_pps == 5000
    assert client.put(url, json={"rate_limit_pps": None}, headers=h).status_code == 200
    assert service.state.vips[("demo", "web")].rate_limit_pps is None


def test_a_drain_with_a_deadline(api) -> None:  # type: ignore[no-untyped-def]
    client, service = api
    h = auth(DEMO_TOKEN)
    assert client.post("/api/v1/vips", json=web_body(), headers=h).status_code == 201
    url = "/api/v1/vips/web/endpoints/tcp/80/backends/10.1.0.11/drain"
    for bad in (0, -1, 10**7, "60", True):
        r = client.post(url, json={"deadline_s": bad}, headers=h)
        assert r.status_code == 422 and r.json()["field"] == "deadline_s", (bad, r.text)
    assert client.post(url, json={"deadline_s": 60}, headers=h).status_code == 200
    be = service.state.vips[("demo", "web")].endpoints[0].backends[0]
    assert be.state == "draining" and be.drain_until is not None
    assert client.post(url, headers=h).status_code == 200  # no body: drains with no deadline
    assert service.state.vips[("demo", "web")].endpoints[0].backends[0].drain_until is None


def test_a_tenant_reads_and_rebuilds_its_endpoints_slot_table(api) -> None:  # type: ignore[no-untyped-def]
    """GET .../slots shows each DIP's share; a long history split the table into many bins,
    and POST .../slots/rebuild builds it afresh (same shares, fewest split bins). Another
    tenant gets 404 for both and changes nothing."""
    client, service = api
    h = auth(DEMO_TOKEN)
    assert client.post("/api/v1/vips", json=web_body(), headers=h).status_code == 201
    base = "/api/v1/vips/web/endpoints/tcp/80"
    table = client.get(f"{base}/slots", headers=h).json()
    assert sum(table["counts"].values()) == 65536 and len(table["whole"]) == 256
    dips = sorted(table["counts"])
    for i in range(40):  # a history of weight changes
        r = client.patch(f"{base}/backends/{dips[i % len(dips)]}", json={"weight": 50 + 7 * i},
                         headers=h)
        assert r.status_code == 200, r.text
    worn = client.get(f"{base}/slots", headers=h).json()
    assert client.get(f"{base}/slots", headers=auth(OTHER_TOKEN)).status_code == 404
    assert client.post(f"{base}/slots/rebuild", headers=auth(OTHER_TOKEN)).status_code == 404
    assert client.get(f"{base}/slots", headers=h).json() == worn
    assert client.get("/api/v1/vips/web/endpoints/udp/53/slots", headers=h).status_code == 404
    r = client.post(f"{base}/slots/rebuild", headers=h)
    assert r.status_code == 200 and r.json()["kind"] == "rebuild_slot_table", r.text
    fresh = client.get(f"{base}/slots", headers=h).json()
    assert fresh["counts"] == worn["counts"]
    assert len(fresh["split"]) < len(worn["split"])
