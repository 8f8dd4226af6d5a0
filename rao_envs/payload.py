"""Model-written payloads made safe to store: every tree the engine builds saves and loads back equal.

The engine passes everything a model writes through here before it enters a tree:

* **text** (turns, goals, contexts, tool output, errors): lone UTF-16 surrogates, which no
  UTF-8 file can hold, become U+FFFD;
* **structured values** (``finish`` results, ``delegate`` arguments): a JSON-normal copy
  (tuples become lists, keys become strings, unknown objects their ``str``); non-finite
  floats become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``; strings are
  cleaned as above; anything nested deeper than :data:`MAX_DEPTH` is replaced by its JSON
  text, cut to :data:`MAX_DEEP_TEXT` characters.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
MAX_DEEP_TEXT = 2000
_SURROGATE = re.compile("[\ud800-\udfff]")
_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (ASCII text is returned as is, fast)."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def normalize(value: Any) -> Any:
    """A JSON-safe, JSON-normal copy of a model-written value (module docstring)."""
    try:
        plain = json.loads(json.dumps(value, default=str))
    except RecursionError:
        return _deep_text(value)
    except (TypeError, ValueError):
        return clean_text(_safe_str(value))
    return _walk(plain, 0)


def _walk(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _NONFINITE.get(value, value)
    if isinstance(value, (list, dict)):
        if depth >= MAX_DEPTH:
            return _deep_text(value)
        if isinstance(value, list):
            return [_walk(v, depth + 1) for v in value]
        return {clean_text(k): _walk(v, depth + 1) for k, v in value.items()}
    return value


def _deep_text(value: Any) -> str:
    """Too deep to store as structure: a cut JSON text of it (never raises)."""
    try:
        text = json.dumps(value, default=str)
    except (RecursionError, TypeError, ValueError):
        text = "<a value nested too deeply to store>"
    if len(text) > MAX_DEEP_TEXT:
        text = text[:MAX_DEEP_TEXT] + f"…[truncated {len(text) - MAX_DEEP_TEXT} characters]"
    return clean_text(text)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a model-made object whose __str__ raises
        return f"<unprintable {type(value).__name__}>"
