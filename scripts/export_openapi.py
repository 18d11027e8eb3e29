"""Write docs/openapi.json from the REST API itself (the unit tests check it is current)."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ananta.controller.api import create_app  # noqa: E402
from tests.unit.local_service import LocalService  # noqa: E402

PATH = os.path.join(ROOT, "docs", "openapi.json")


def spec() -> str:
    return json.dumps(create_app(LocalService()).openapi(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    with open(PATH, "w") as fh:
        fh.write(spec())
    print(f"wrote {PATH}")
