"""Decoding of untrusted JSON headers (manifests, tensor-file headers, protocol headers)."""

from __future__ import annotations

import json


def json_object(raw: bytes, error: type[Exception], what: str) -> dict:
    """``raw`` as a UTF-8 JSON object, or ``error`` saying that ``what`` is not one."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{what} is not UTF-8 JSON: {e}") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    return value
