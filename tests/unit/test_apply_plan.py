"""`ananta apply`: the requests that turn the current VIPs into the file's, change by change."""

from __future__ import annotations

from ananta.apply_plan import ipvsadm_table, plan_apply
from ananta.controller.model import Services
from tests.unit.fixtures import demo_services

BACKENDS = "/api/v1/vips/web/endpoints/tcp/80/backends"


def modified(change) -> Services:  # type: ignore[no-untyped-def]
    data = demo_services().model_dump(mode="json")
    change(data["vips"][0])
    return Services.model_validate(data)


def test_new_vip_is_created_and_same_vip_changes_nothing() -> None:
    desired = demo_services()
    assert [str(r) for r in plan_apply([], desired)] == ["POST /api/v1/vips"]
    assert plan_apply(desired.vips, desired) == []


def test_backend_changes_are_made_in_place() -> None:
    def change(vip):  # type: ignore[no-untyped-def]
        backends = vip["endpoints"][0]["backends"]
        backends[0]["weight"] = 50  # reweighted
        backends[1]["state"] = "draining"  # drained
        del backends[2]  # removed
        backends.append({"address": "10.2.0.11", "port": 9090})  # moved to another port
        vip["endpoints"].append({"protocol": "udp", "port": 53, "backends": [backends[0]]})

    requests = plan_apply(demo_services().vips, modified(change))
    assert [str(r) for r in requests] == [
        f"PATCH {BACKENDS}/10.1.0.11",
        f"PATCH {BACKENDS}/10.1.0.12",
        f"DELETE {BACKENDS}/10.2.0.11",
        f"POST {BACKENDS}",
        "POST /api/v1/vips/web/endpoints",
    ]
    assert requests[0].body == {"weight": 50, "state": "active"}


def test_address_change_recreates_and_prune_deletes_the_rest() -> None:
    moved = modified(lambda v: v.update(address="203.0.113.99"))
    assert [str(r) for r in plan_apply(demo_services().vips, moved)] == [
        "DELETE /api/v1/vips/web", "POST /api/v1/vips"]
    assert [str(r) for r in plan_apply(demo_services().vips, Services(), prune=True)] == [
        "DELETE /api/v1/vips/web"]
    assert plan_apply(demo_services().vips, Services()) == []


def test_ipvsadm_table() -> None:
    table = ipvsadm_table(demo_services().vips).splitlines()
    assert table[2].split() == ["TCP", "203.0.113.10:80", "hash", "demo/web"]
    assert table[3].split() == ["->", "10.1.0.11:8080", "100", "active"]


def test_the_admin_applying_for_a_tenant_creates_its_vips_in_that_tenant() -> None:
    desired = demo_services()
    (create,) = plan_apply([], desired, tenant="demo")
    assert create.body is not None and create.body["tenant"] == "demo"
    (own,) = plan_apply([], desired)  # a tenant's own token: the API puts it in its tenant
    assert own.body is not None and "tenant" not in own.body
