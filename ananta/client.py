"""The REST client behind the `ananta` CLI (imperative shell).

Where to connect, in order: --url/--token, then ANANTA_URL/ANANTA_TOKEN (or
ANANTA_TOKEN_FILE), then the file named by ANANTA_CONFIG, then ~/.config/ananta/cli.yaml,
then the running lab's cli.yaml. A config file may name a network namespace (`netns`) in
which the API is reachable: the CLI then runs itself inside it (how the lab's API on its
management network is reached from the host).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

LAB_CLI_CONFIG = os.path.join(os.environ.get("ANANTA_LAB_DIR", "/run/ananta/lab"), "cli.yaml")
USER_CLI_CONFIG = os.path.expanduser("~/.config/ananta/cli.yaml")


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        if isinstance(detail, dict) and "error" in detail:
            parts = detail.get("details") or [detail]
            text = "; ".join(f"{d['field']}: {d['error']}" if d.get("field") else d["error"]
                             for d in parts)
        else:
            text = str(detail)
        super().__init__(f"HTTP {status}: {text}")


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str
    netns: str | None = None
    fallback_urls: tuple[str, ...] = ()  # other replicas, tried when `url` does not answer


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().strip()


def resolve(url: str | None = None, token: str | None = None) -> Endpoint:
    url = url or os.environ.get("ANANTA_URL")
    token = token or os.environ.get("ANANTA_TOKEN")
    if not token and os.environ.get("ANANTA_TOKEN_FILE"):
        token = _read(os.environ["ANANTA_TOKEN_FILE"])
    netns, fallbacks = None, ()
    for path in (os.environ.get("ANANTA_CONFIG"), USER_CLI_CONFIG, LAB_CLI_CONFIG):
        if not path or not os.path.exists(path) or (url and token):
            continue
        with open(path, encoding="utf-8") as fh:
            conf = yaml.safe_load(fh) or {}
        url = url or conf.get("url")
        if not token:
            token = conf.get("token") or (_read(conf["token_file"]) if conf.get("token_file")
                                          else None)
        netns = conf.get("netns")
        fallbacks = tuple(u.rstrip("/") for u in conf.get("fallback_urls", []))
        break
    if not url or not token:
        raise RuntimeError("no API endpoint: give --url and --token, set ANANTA_URL and "
                           "ANANTA_TOKEN, or write ~/.config/ananta/cli.yaml")
    return Endpoint(url.rstrip("/"), token, netns, fallbacks)


class Client:
    def __init__(self, endpoint: Endpoint, timeout: float = 10.0):
        self.urls = [endpoint.url, *endpoint.fallback_urls]
        self.http = httpx.Client(timeout=timeout,
                                 headers={"Authorization": f"Bearer {endpoint.token}"})

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = None
        for url in list(self.urls):
            try:
                r = self.http.request(method, url + path, json=body)
            except httpx.ConnectError as exc:  # that replica is down: try the next one
                error = exc
                continue
            except httpx.HTTPError as exc:
                raise RuntimeError(f"cannot reach the Manager API: {exc}") from None
            self.urls.remove(url)
            self.urls.insert(0, url)  # keep using the replica that answered
            break
        if r is None:
            raise RuntimeError(f"cannot reach the Manager API: {error}")
        if r.status_code >= 400:
            try:
                detail = r.json()
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r.json()

    def wait_programmed(self, op_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            op: dict[str, Any] = self.call("GET", f"/api/v1/operations/{op_id}")
            if op["status"] == "programmed" or time.monotonic() > deadline:
                return op
            time.sleep(0.02)
