"""docs/ stays true: the published OpenAPI spec is the API's own."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_docs_openapi_json_is_current() -> None:
    spec = importlib.util.spec_from_file_location("export_openapi",
                                                  ROOT / "scripts" / "export_openapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "openapi.json").read_text() == module.spec(), (
        "docs/openapi.json is stale: run .venv/bin/python scripts/export_openapi.py")
