"""Decoding of untrusted JSON headers (manifests, tensor-file headers, protocol headers).

Untrusted JSON is bounded before anything reads it: nesting at most ``MAX_DEPTH`` levels,
integers of at most ``MAX_DIGITS`` digits, no ``NaN``/``Infinity`` literals. Python's own
limits (recursion, the 4,300-digit integer cap of 3.11+) would otherwise surface as
``RecursionError``/``ValueError`` and differ between interpreters.
"""

from __future__ import annotations

import json

MAX_DEPTH = 32  # arrays and objects inside each other
MAX_DIGITS = 20  # an integer literal's digits: every count, size and shape fits in 64 bits


class _Refused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_DIGITS})")
    return int(text)


def _number(text: str) -> float:
    if len(text) > 64:
        raise _Refused(f"a number literal of {len(text)} characters (at most 64)")
    return float(text)


def _constant(name: str) -> float:
    raise _Refused(f"the non-standard literal {name}")


def _depth(value: object) -> int:
    """Nesting depth of a decoded value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def json_object(raw: bytes, error: type[Exception], what: str) -> dict:
    """``raw`` as a UTF-8 JSON object within the limits above, or ``error`` saying why ``what`` is not one."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_int=_integer, parse_float=_number, parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{what} is not UTF-8 JSON: {e}") from None
    except _Refused as e:
        raise error(f"{what} holds {e}") from None
    except RecursionError:
        raise error(f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise error(f"{what} is nested more than {MAX_DEPTH} levels deep")
    return value
