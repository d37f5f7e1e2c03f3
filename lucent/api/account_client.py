"""Typed calls for the account, device, share-link, hidden-data and audit routes (issue 4).

Kept apart from ``client.py`` so the archive/PACS calls and these can grow independently;
``LucentClient`` inherits this mixin and supplies ``_request``/``_get``.
"""

from __future__ import annotations

from typing import Any

import httpx


class AccountsApi:
    """Mixin: every method goes through the host client's ``_request`` (errors become ApiError)."""

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _get(self, path: str, **params: Any) -> Any:
        raise NotImplementedError
