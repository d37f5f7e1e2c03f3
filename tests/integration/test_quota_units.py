"""Quotas are whole MB (1 MB = 1,048,576 bytes): PUT /quotas took fractions and limits
under 1 MB and stored byte counts nobody typed (0.5 MB became 524288 bytes, 1e-6 MB one
byte, smaller than any image). 0 stays: nothing may be stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_accounts_support import make_app


@pytest.mark.parametrize("limit", [0.5, 1e-6, 1.5, 100.25, 0.999])
def test_fractional_and_sub_megabyte_quotas_are_refused_with_a_reason(
    tmp_path: Path, limit: float
) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin()
        body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": limit}
        r = app.http.put("/api/v1/quotas", headers=admin, json=body)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "whole number of MB" in detail and "1048576 bytes" in detail, detail
        assert app.http.get("/api/v1/quotas", headers=admin).json() == []


@pytest.mark.parametrize(("limit", "stored"), [(0, 0), (1, 2**20), (250.0, 250 * 2**20)])
def test_whole_megabytes_and_zero_are_stored_as_given(
    tmp_path: Path, limit: float, stored: int
) -> None:
    with make_app(tmp_path) as app:
        admin = app.admin()
        body = {"kind": "pool", "subject": "DEFAULT", "limit_mb": limit}
        [quota] = app.http.put("/api/v1/quotas", headers=admin, json=body).json()
        assert quota["limit_bytes"] == stored
