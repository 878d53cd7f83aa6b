"""SGLang's ``/generate`` contract, checked as SGLang checks it, for treegym's stand-in server.

``treegym serve --engine hf`` stands in for SGLang in every client test, so it must refuse what
SGLang refuses: a typo in a ``sampling_params`` key or a string where a number belongs would
otherwise pass every test and fail against the real server. From SGLang 0.5.23
(``python/sglang/``):

* The schema gate, ``api/v1/api_types.py`` (generated from SGLang's proto files): a
  ``sampling_params`` key outside ``_FIELDS_SamplingParams`` (1256) or a value of the wrong
  JSON type is refused by ``decode_SamplingParams`` (1259-1321) with serde's text; top-level
  keys it does not know are ignored (``decode_GenerateRequest``, 1413-1497: sglang-router adds
  ``model``, ``log_metrics``, …) but known ones are type-checked. ``entrypoints/http_server.py``
  ``generate_request`` (933-940) answers 400 ``{"error": "<text>"}``.
* ``sampling/sampling_params.py`` ``SamplingParams.__post_init__`` (``null`` is the default,
  temperature below 1e-6 is greedy, ``top_k`` −1 is the whole vocabulary; 186-245) and
  ``verify`` (value ranges, 252-330); ``managers/io_struct.py`` (exactly one input, 444-455;
  rid lists, 390-397 and 759-775). These raise ``ValueError``, answered 400
  ``{"error": {"message": "<text>"}}`` (``http_server.py`` 983-990, 2246-2250).

What SGLang accepts but treegym's engine cannot do (stop strings, penalties, ``n``, prompt
logprobs, …) is refused with a message that says so, never silently ignored.
"""

from __future__ import annotations

import math
from typing import Any


class ContractError(ValueError):
    """The body breaks the schema: SGLang answers ``{"error": "<text>"}``."""


class ValueRefused(ValueError):
    """A value SGLang (or this server) refuses: answered ``{"error": {"message": ...}}``."""


# api_types.py: serde's "expected" text per kind of field.
_EXPECTED = {"int": "i64", "float": "f64", "bool": "a boolean", "str": "a string"}

#: ``_FIELDS_SamplingParams`` (api_types.py 1256) and each field's JSON kind (1262-1319).
SAMPLING_FIELDS = {
    "max_new_tokens": "int", "stop": "str|list", "stop_token_ids": "list[int]",
    "stop_regex": "str|list", "temperature": "float", "top_p": "float", "top_k": "int",
    "min_p": "float", "frequency_penalty": "float", "presence_penalty": "float",
    "repetition_penalty": "float", "min_new_tokens": "int", "n": "int", "json_schema": "str",
    "regex": "str", "ebnf": "str", "structural_tag": "str", "ignore_eos": "bool",
    "skip_special_tokens": "bool", "spaces_between_special_tokens": "bool",
    "no_stop_trim": "bool", "stream_interval": "int", "logit_bias": "map",
    "sampling_seed": "int", "custom_params": "any", "beam_width": "int", "watermark": "map",
    "choice": "list[str]",
}  # fmt: skip

#: Top-level fields checked here (decode_GenerateRequest's kinds); others are ignored.
REQUEST_FIELDS = {
    "rid": "str|list", "text": "str|list", "stream": "bool", "return_logprob": "bool|list",
    "logprob_start_len": "int|list", "top_logprobs_num": "int|list",
    "return_text_in_logprobs": "bool", "return_hidden_states": "bool|list",
    "routing_key": "str", "priority": "int", "session_id": "str",
}  # fmt: skip

#: Sampling features treegym's engine does not have, with the value that means "off".
UNSUPPORTED_SAMPLING = {
    "stop": None, "stop_regex": None, "min_p": 0.0, "frequency_penalty": 0.0,
    "presence_penalty": 0.0, "repetition_penalty": 1.0, "min_new_tokens": 0, "n": 1,
    "beam_width": None, "logit_bias": {}, "custom_params": None, "watermark": None,
    "choice": [],
}  # fmt: skip


def _unexpected(v: Any) -> str:
    """serde's ``Unexpected`` display (api_types.py 30-45)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v}`"
    if isinstance(v, str):
        return f'string "{v}"'
    return "sequence" if isinstance(v, list) else "map" if isinstance(v, dict) else "a value"


def _is(kind: str, v: Any) -> bool:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "float": number,
        "bool": isinstance(v, bool),
        "str": isinstance(v, str),
    }[kind]


def _check(kind: str, v: Any) -> None:
    """Raise serde's ``invalid type`` text unless ``v`` is of ``kind`` (null passes: it means
    the default)."""
    if v is None or kind == "any":
        return
    if kind == "map":
        items = [(x, "a map") for x in [v] if not isinstance(v, dict)]
    elif kind.startswith("list["):
        inner = kind[5:-1]
        if not isinstance(v, list):
            items = [(v, "a sequence")]
        else:
            items = [(x, _EXPECTED[inner]) for x in v if not _is(inner, x)]
    elif "|list" in kind:
        base = kind.split("|")[0]
        values = v if isinstance(v, list) else [v]
        items = [(x, _EXPECTED[base]) for x in values if not _is(base, x)]
    else:
        items = [] if _is(kind, v) else [(v, _EXPECTED[kind])]
    if items:
        x, expected = items[0]
        raise ContractError(f"invalid type: {_unexpected(x)}, expected {expected}")


def check_sampling(params: Any) -> dict[str, Any]:
    """One ``sampling_params`` object, checked; returns it without its ``null`` values (each
    means SGLang's default)."""
    if not isinstance(params, dict):
        raise ContractError(f"invalid type: {_unexpected(params)}, expected struct SamplingParams")
    for key, value in params.items():
        kind = SAMPLING_FIELDS.get(key)
        if kind is None:
            listed = ", ".join(f"`{f}`" for f in SAMPLING_FIELDS)
            raise ContractError(f"unknown field `{key}`, expected one of {listed}")
        _check(kind, value)
    clean = {k: v for k, v in params.items() if v is not None}
    _verify(clean)
    for key, off in UNSUPPORTED_SAMPLING.items():
        if key in clean and clean[key] != off:
            raise ValueRefused(
                f"sampling_params {key}={clean[key]!r} is not supported by treegym's server "
                "(its engine has no such feature); leave it out"
            )
    return clean


def _verify(p: dict[str, Any]) -> None:
    """``SamplingParams.verify``'s checks, in its words (sampling_params.py 252-330)."""
    temperature, top_p = p.get("temperature", 1.0), p.get("top_p", 1.0)
    if not math.isfinite(temperature) or temperature < 0.0:
        raise ValueRefused(
            f"temperature must be a non-negative finite number, got {float(temperature)}."
        )
    if not 0.0 < top_p <= 1.0:
        raise ValueRefused(f"top_p must be in (0, 1], got {float(top_p)}.")
    top_k = p.get("top_k", -1)
    if temperature >= 1e-6 and top_k != -1 and top_k < 1:  # greedy sets top_k=1 first
        raise ValueRefused(f"top_k must be -1 (disable) or at least 1, got {top_k}.")
    if p.get("max_new_tokens", 128) < 0:
        raise ValueRefused(f"max_new_tokens must be at least 0, got {p['max_new_tokens']}.")
    seed = p.get("sampling_seed")
    if seed is not None and not -(2**63) <= seed <= 2**63 - 1:
        raise ValueRefused(f"sampling_seed must be in [-2**63, 2**63 - 1], got {seed}.")
    if sum(p.get(k) is not None for k in ("json_schema", "regex", "ebnf", "structural_tag")) > 1:
        raise ValueRefused("Only one of json_schema, regex, ebnf, or structural_tag can be set.")


def check_request(body: Any) -> None:
    """The top-level fields of a ``/generate`` body (unknown ones are ignored, as SGLang's
    gate does) and the features this server refuses."""
    if not isinstance(body, dict):
        raise ContractError(f"invalid type: {_unexpected(body)}, expected struct GenerateRequest")
    for key, kind in REQUEST_FIELDS.items():
        _check(kind, body.get(key))
    ids = body.get("input_ids")
    if ids is not None:  # TokenIdsOrList: one flat list, or a list of lists (1029-1040)
        if not isinstance(ids, list):
            raise ContractError(f"invalid type: {_unexpected(ids)}, expected a value or an "
                                "array of values for TokenIdsOrList")  # fmt: skip
        for row in ids if ids and not _is("float", ids[0]) else [ids]:
            _check("list[int]", row)
    if body.get("logprob_start_len") not in (None, -1):
        raise ValueRefused("prompt logprobs (logprob_start_len >= 0) are not supported by "
                           "treegym's server; send -1 (output tokens only)")  # fmt: skip
    for key in ("top_logprobs_num", "token_ids_logprob", "return_hidden_states"):
        if body.get(key):
            raise ValueRefused(f"{key} is not supported by treegym's server; leave it out")


def request_ids(rid: Any, batch: bool, n: int) -> list[Any]:
    """Each request's rid after SGLang's ``_normalize_rid`` and ``_validate_rid_uniqueness``
    (io_struct.py 759-775, 390-397): a string is expanded to ``rid_i`` for a batch, a list must
    have one unique id per request."""
    if not batch:
        if isinstance(rid, list):
            raise ValueRefused("The rid should be a string for a single request.")
        return [rid]
    if rid is None:
        return [None] * n
    if isinstance(rid, str):
        return [f"{rid}_{i}" for i in range(n)]
    if len(rid) != n:
        raise ValueRefused(
            "The specified rids length mismatch with the batch_size for batch processing."
        )
    duplicates = sorted({r for r in rid if rid.count(r) > 1})
    if duplicates:
        raise ValueRefused(f"Duplicate request IDs detected within the request: {duplicates}")
    return list(rid)
