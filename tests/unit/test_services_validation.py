"""Services YAML: accepted when valid; refused with the key path when not."""

from __future__ import annotations

import pytest
import yaml

from ananta.config import InvalidConfig, parse_yaml_text
from ananta.controller.model import Services, check_services
from tests.unit.fixtures import default_inventory, demo_services, demo_services_text


def errors_of(text: str) -> list[str]:
    try:
        services = parse_yaml_text(Services, text, "services.yaml")
    except InvalidConfig as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in check_services(services, default_inventory())]


def mutate(change) -> str:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(demo_services_text())
    change(data)
    return yaml.safe_dump(data)


def test_demo_services_are_valid() -> None:
    assert errors_of(demo_services_text()) == []
    assert demo_services().vips[0].endpoints[0].backends[0].weight == 100


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["vips"][0].update(address="203.0.113.300"),
         "vips[0].address: Value error, not an IPv4 address"),
        (lambda d: d["vips"][0]["endpoints"][0]["backends"][2].update(weight=5000),
         "vips[0].endpoints[0].backends[2].weight: Input should be less than or equal to 1000"),
        (lambda d: d["vips"][0]["endpoints"][0]["backends"][1].update(weight=-1),
         "vips[0].endpoints[0].backends[1].weight: Input should be greater than or equal to 0"),
        (lambda d: d["vips"][0]["endpoints"][0].update(port=70000),
         "vips[0].endpoints[0].port: Input should be less than or equal to 65535"),
        (lambda d: d["vips"][0].update(colour="blue"), "vips[0].colour: unknown key"),
        (lambda d: d["vips"][0]["endpoints"][0].update(protocol="sctp"),
         "vips[0].endpoints[0].protocol: Input should be 'tcp' or 'udp'"),
        (lambda d: d["vips"][0]["endpoints"][0]["backends"][0].update(address="10.9.9.9"),
         "vips[0].endpoints[0].backends[0].address: 10.9.9.9 is not a VM in the inventory"),
        (lambda d: d["vips"][0].update(address="192.0.2.1"),
         "vips[0].address: 192.0.2.1 is outside the VIP pool"),
        (lambda d: d["vips"][0]["endpoints"].append(dict(d["vips"][0]["endpoints"][0])),
         "vips[0].endpoints[1]: duplicates vips[0].endpoints[0] (203.0.113.10 tcp/80)"),
        (lambda d: d["vips"].append(dict(d["vips"][0], name="other")),
         "vips[1].endpoints[0]: duplicates vips[0].endpoints[0] (203.0.113.10 tcp/80)"),
        (lambda d: d["vips"][0]["endpoints"][0]["backends"].append(
            dict(d["vips"][0]["endpoints"][0]["backends"][0], port=9090)),
         "vips[0].endpoints[0].backends[4].address: duplicates"),
        (lambda d: d["vips"][0]["endpoints"][0].update(backends=[]),
         "vips[0].endpoints[0].backends: List should have at least 1 item"),
    ],
)
def test_bad_services_name_the_key_path(change, expected) -> None:  # type: ignore[no-untyped-def]
    errors = errors_of(mutate(change))
    assert any(e.startswith(expected) for e in errors), errors


def test_not_yaml_and_not_a_mapping() -> None:
    assert errors_of("vips: [") and "not valid YAML" in errors_of("vips: [")[0]
    assert errors_of("- 1\n- 2\n") == ["expected a mapping at the top level"]


def test_a_boolean_is_not_a_number() -> None:
    """JSON `false` must not pass as weight 0 (nor `true` as port 1)."""
    import pydantic

    from ananta.controller.model import Backend
    for bad in ({"address": "10.1.0.11", "port": 8080, "weight": False},
                {"address": "10.1.0.11", "port": True}):
        try:
            Backend.model_validate(bad)
        except pydantic.ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")
