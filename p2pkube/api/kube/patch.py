"""PATCH bodies (placeholder until the strategic merge patch lands): JSON merge patch only."""

from __future__ import annotations

import json
from typing import Any


class PatchError(ValueError):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def apply_patch(
    current: dict[str, Any], patch: bytes, content_type: str, api_version: str
) -> dict[str, Any]:
    try:
        body = json.loads(patch)
    except ValueError as exc:
        raise PatchError(f"the patch is not valid JSON: {exc}", 400) from None
    result = _merge(current, body)
    assert isinstance(result, dict)
    return result
