"""Helpers for the ops tests: plain HTTP to busd's metrics port and scrape parsing.

Scrapes are parsed with prometheus-client's own parser, not busd's or busdctl's code.
"""

from __future__ import annotations

import http.client
import shutil
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus); CI has it"
)


def get(
    address: str, path: str, method: str = "GET", timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def scrape_text(address: str) -> str:
    status, _, body = get(address, "/metrics")
    assert status == 200, f"/metrics answered {status}"
    return body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: Any
) -> float | None:
    return scrape.get((metric, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(scrape_text(address))
