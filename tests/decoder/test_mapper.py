"""The per-meter mapper: a known push list (values parsed alone) gives exactly
what the general path (the whole body decoded) gives, on real captures and on
generated push lists; the general path is left only when it must be."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.values import Push
from meterpipe.decoder import mapper as mapper_module
from meterpipe.decoder.apdu import notification_header, parse_notification
from meterpipe.decoder.mapper import PushMapper
from meterpipe.decoder.mapping import is_push_list, map_body
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import DLMS_VECTORS, keys, model_hint, needs_corpus, vector
from tests.decoder import strategies as s

GOOD = [v for v in DLMS_VECTORS if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))]


def _decoder(v: dict[str, Any]) -> MeterDecoder:
    key, auth = keys(v)
    return MeterDecoder("m", key=key, auth_key=auth, model=model_hint(v))


def _feed(decoder: MeterDecoder, v: dict[str, Any]) -> list[Push | MeterpipeError]:
    data = bytes.fromhex(v["bytes_hex"])
    return decoder.feed_apdu(data) if v["transport"] == "apdu" else decoder.feed(data)


def _bodies(v: dict[str, Any]) -> list[bytes]:
    """The plaintext notification bodies of a capture, as the session hands them to the mapper."""
    out = []
    for apdu in s.plaintexts(v, *keys(v)):
        _, _, pos = notification_header(apdu)
        out.append(apdu[pos:])
    return out


def _is_push_list_capture(v: dict[str, Any]) -> bool:
    return any(is_push_list(parse_notification(a).body) for a in s.plaintexts(v, *keys(v)))


@needs_corpus
@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["id"])
def test_a_known_push_list_decodes_to_the_same_push(v: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = _decoder(v)
    cold = [o for o in _feed(decoder, v) if isinstance(o, Push)]
    decoder.reset_replay_state()
    if _is_push_list_capture(v):
        assert decoder.mapper.known_lists == 1

        def whole_body_decoded(*args: Any) -> Any:
            raise AssertionError("a known push list went the general path")

        monkeypatch.setattr(mapper_module, "decode_body", whole_body_decoded)
    else:
        assert decoder.mapper.known_lists == 0
    warm = [o for o in _feed(decoder, v) if isinstance(o, Push)]
    assert warm == cold and cold


@needs_corpus
@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["id"])
def test_the_mapper_maps_each_body_as_map_body_maps_it_decoded(v: dict[str, Any]) -> None:
    model = model_hint(v)
    mapper = PushMapper(model)
    for body in _bodies(v):
        general = map_body(parse_notification(b"\x0f\x00\x00\x00\x00\x00" + body).body, model=model)
        assert mapper.map(body) == general  # first sight: the general path
        assert mapper.map(body) == general  # again: the known list, when it is one


@settings(max_examples=s.examples(200), deadline=2000, derandomize=s.DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(s.push_list_body())
def test_a_generated_push_list_maps_alike_both_ways(shaped: s.Shaped) -> None:
    """Attribute-3 scalers included: the plan reads them from the values each push."""
    for model in (None, "e450", "kamstrup"):
        mapper = PushMapper(model)
        general = map_body(shaped.body.value, model=model)
        assert mapper.map(shaped.body.raw) == general
        assert mapper.known_lists == 1
        assert mapper.map(shaped.body.raw) == general


@needs_corpus
def test_a_new_push_list_falls_back_and_is_learnt_too() -> None:
    first, second = vector("sdc-lg-e570-ch-unenc-vse2026"), vector("sdc-lg-e450-ch-unenc-vse2026")
    decoder = MeterDecoder("m")
    a = [o for o in _feed(decoder, first) if isinstance(o, Push)]
    b = [o for o in _feed(decoder, second) if isinstance(o, Push)]
    assert a == [o for o in _feed(MeterDecoder("m"), first) if isinstance(o, Push)]
    assert b == [o for o in _feed(MeterDecoder("m"), second) if isinstance(o, Push)]
    assert decoder.mapper.known_lists == 2


def _register_push(scaler: int, value: int) -> bytes:
    """A push list with 1-0:1.8.0 twice: its value (attribute 2) and its {scaler, unit} (attribute 3)."""

    def definition(class_id: int, code: bytes, attribute: int) -> bytes:
        # structure {long-unsigned class, octet-string OBIS, integer attribute, long-unsigned data index}
        return b"\x02\x04\x12" + class_id.to_bytes(2, "big") + b"\x09\x06" + code + b"\x0f" + bytes([attribute]) + b"\x12\x00\x00"

    energy = bytes((1, 0, 1, 8, 0, 255))
    definitions = b"\x01\x03" + definition(40, bytes((0, 0, 25, 9, 0, 255)), 2) + definition(3, energy, 2) + definition(3, energy, 3)
    scaler_unit = b"\x02\x02\x0f" + scaler.to_bytes(1, "big", signed=True) + b"\x16\x1e"  # unit 30: Wh
    return b"\x02\x03" + definitions + b"\x06" + value.to_bytes(4, "big") + scaler_unit


def test_a_known_push_list_reads_the_scaler_each_push_sends() -> None:
    """Scalers pushed as attribute 3 are values, not layout: the plan reads them
    from every push (before, such a list was never learnt)."""
    mapper = PushMapper("e450")
    first = mapper.map(_register_push(-1, 12345))
    second = mapper.map(_register_push(2, 7))
    assert mapper.known_lists == 1
    assert [(r.obis, r.value, r.exponent, r.unit) for r in (*first.readings, *second.readings)] == [
        ("1-0:1.8.0", 12345, -1, "Wh"),
        ("1-0:1.8.0", 7, 2, "Wh"),
    ]


@needs_corpus
def test_values_cut_short_after_a_known_list_are_an_error_not_a_push() -> None:
    v = vector("sdc-lg-e360-ch-unenc-vse2026")
    decoder = MeterDecoder("m", model="e360")
    _feed(decoder, v)
    (push,) = [o for o in _feed(decoder, v) if isinstance(o, Push)]
    apdu = bytes.fromhex(v["bytes_hex"])[11:-3]  # the LLC-less APDU of the single frame
    assert apdu[0] == 0x0F
    out = decoder.feed_apdu(apdu[:-5])
    assert len(out) == 1 and isinstance(out[0], MeterpipeError) and out[0].kind == "truncated"
    assert push.readings


@needs_corpus
def test_a_value_only_gurux_reads_after_a_known_list_goes_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The value parser meeting a type it does not support (compact-array here)
    hands the whole body to decode_body, which falls back to gurux-dlms."""
    (body,) = _bodies(vector("sdc-lg-e360-ch-unenc-vse2026"))
    mapper = PushMapper("e360")
    expected = mapper.map(body)
    decoded = parse_notification(b"\x0f\x00\x00\x00\x00\x00" + body).body
    seen: list[bytes] = []

    def gurux_decoded(buf: bytes, pos: int = 0) -> tuple[Any, bool]:
        seen.append(buf)
        return decoded, True

    monkeypatch.setattr(mapper_module, "decode_body", gurux_decoded)
    assert body[-3:-2] == b"\x12"  # the last value: a long-unsigned
    odd = body[:-3] + b"\x13\x12\x02\x00\x01"  # ... sent as a compact-array
    assert mapper.map(odd) == expected and seen == [odd]
    assert mapper.known_lists == 1
