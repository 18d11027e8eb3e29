"""Schemathesis fuzzes the REST API from its own OpenAPI spec: no 5xx, no invalid input
accepted, every response as documented. Runs in-process against a single-node service."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from ananta.controller.api import create_app
from tests.unit.fixtures import default_inventory, demo_services
from tests.unit.local_service import ADMIN_TOKEN, LocalService

DEMO_TOKEN = "demo-token-0123456789abcdefgh"


def seeded_app():  # type: ignore[no-untyped-def]
    service = LocalService()
    service.propose({"op": "set_inventory",
                     "inventory": default_inventory().model_dump(mode="json")}, "1" * 32)
    service.propose({"op": "put_tenant", "tenant": {
        "name": "demo", "token_sha256": __import__("hashlib").sha256(
            DEMO_TOKEN.encode()).hexdigest()}}, "2" * 32)
    vip = demo_services().vips[0].model_dump(mode="json")
    service.propose({"op": "create_vip", "vip": vip}, "3" * 32)
    return create_app(service)


schema = schemathesis.openapi.from_asgi("/openapi.json", seeded_app())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_as_admin(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_as_tenant(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {DEMO_TOKEN}"})
