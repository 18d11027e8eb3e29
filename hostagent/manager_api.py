"""The host agent's client of the Manager's REST API: tries each replica, keeps using the
one that answered (imperative shell)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ManagerApi:
    def __init__(self, api_urls: list[str], token: str, timeout: float = 2.0):
        self.urls = list(api_urls)
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        for url in list(self.urls):
            try:
                r = self.http.request(method, url + path, json=body)
            except httpx.HTTPError:
                continue
            self.urls.remove(url)
            self.urls.insert(0, url)
            if r.status_code >= 400:
                raise ApiError(r.status_code, f"{method} {path}: HTTP {r.status_code} "
                               f"{r.text[:200]}")
            return r.json()
        raise ApiError(0, "no Manager API replica answers")
