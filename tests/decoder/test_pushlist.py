"""The push-list fast path gives exactly what the general path gives."""

from __future__ import annotations

from typing import Any

import pytest

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import DLMS_VECTORS, keys, model_hint, needs_corpus, vector

GOOD = [v for v in DLMS_VECTORS if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))]


def _decoder(v: dict[str, Any]) -> MeterDecoder:
    key, auth = keys(v)
    return MeterDecoder("m", key=key, auth_key=auth, model=model_hint(v))


def _feed(decoder: MeterDecoder, v: dict[str, Any]) -> list[Push | MeterpipeError]:
    data = bytes.fromhex(v["bytes_hex"])
    return decoder.feed_apdu(data) if v["transport"] == "apdu" else decoder.feed(data)


@needs_corpus
@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["id"])
def test_a_known_push_list_decodes_to_the_same_push(v: dict[str, Any]) -> None:
    decoder = _decoder(v)
    cold = [o for o in _feed(decoder, v) if isinstance(o, Push)]
    decoder.reset_replay_state()
    warm = [o for o in _feed(decoder, v) if isinstance(o, Push)]
    assert warm == cold
    layout = "push list" in (v.get("notes") or "") or v["id"].startswith(("sdc-lg", "sdc-iskra"))
    if layout and "nopushlist" not in v["id"] and "extreg" not in v["id"]:
        assert len(decoder._push_lists) == 1  # the fast path was taken the second time


@needs_corpus
def test_a_new_push_list_falls_back_and_is_learnt_too() -> None:
    first, second = vector("sdc-lg-e570-ch-unenc-vse2026"), vector("sdc-lg-e450-ch-unenc-vse2026")
    decoder = MeterDecoder("m")
    a = [o for o in _feed(decoder, first) if isinstance(o, Push)]
    b = [o for o in _feed(decoder, second) if isinstance(o, Push)]
    assert a == [o for o in _feed(MeterDecoder("m"), first) if isinstance(o, Push)]
    assert b == [o for o in _feed(MeterDecoder("m"), second) if isinstance(o, Push)]
    assert len(decoder._push_lists) == 2


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
