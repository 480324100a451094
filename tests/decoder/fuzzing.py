"""Inputs and budgets of the bad-input suite (tests/decoder/test_properties.py; the
capped-buffer and pty tests in tests/reliability/test_bad_input.py use the budgets too).

Inputs: real captures from the corpus (whole streams, link frames, reassembled
APDUs, plaintext APDUs), mangled the ways a serial line and an attacker do
(:func:`mutated`: bit flips, truncations, splices, lying and huge length fields,
duplicated stretches), then sometimes given a worst-case shape (:func:`hostile`:
HDLC frames declaring the 11-bit maximum, M-Bus L = 255, A-XDR lengths
``84 FFFFFFFF``, 1,000 levels of nesting); random bytes when the corpus is absent.

Budgets: :func:`check` runs one input and returns its result or MeterpipeError;
it must finish within ``MAX_SECONDS`` (a slow input is retried once and judged
by the lower of wall and CPU time, so a loaded machine or a garbage collection
does not fail the run), and every ``MEM_EVERY``-th input is re-run under
tracemalloc with a peak under ``PEAK_BYTES``. Volume: ``FUZZ_BUDGET`` inputs
in a CI run, split by :data:`BUDGET_SHARE`; ``METERPIPE_FUZZ=quick`` for a 5 %
smoke run, ``METERPIPE_FUZZ=deep`` for 10x and fresh random examples
(``METERPIPE_FUZZ_SCALE``, see strategies.py, multiplies on top).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.values import Push
from tests.conftest import DLMS_VECTORS, keys
from tests.decoder import strategies as s

# --- budgets ------------------------------------------------------------------------

PROFILES = {"quick": 0.05, "ci": 1.0, "deep": 10.0}
PROFILE = os.environ.get("METERPIPE_FUZZ", "ci")
SCALE = PROFILES.get(PROFILE, 1.0) * s.FUZZ_SCALE
FUZZ_BUDGET = 100_000  # inputs in the ci profile, spread over the tests (BUDGET_SHARE)

# Shares of FUZZ_BUDGET (sum 100,000); the slow layers get fewer, the cheap ones more.
BUDGET_SHARE = {
    "framer": 14_000,
    "parse_hdlc/mbus/frame": 16_000,
    "assemblers": 8_000,
    "parse_ciphered/decrypt": 12_000,
    "axdr/notification/map_body": 16_000,
    "gurux": 6_000,
    "MeterDecoder.feed": 12_000,
    "MeterDecoder.feed_frame": 8_000,
    "MeterDecoder.feed_apdu": 8_000,
}
assert sum(BUDGET_SHARE.values()) == FUZZ_BUDGET

MAX_SECONDS = 0.050  # per input
MEM_EVERY = 4  # every 4th input is re-run under tracemalloc
# A push is at most MAX_APDU (64 KiB) once reassembled and the framer holds at most
# DEFAULT_MAX_BUFFER (16 KiB); decoding copies a buffer a few times (bytes(), slices,
# the decrypted plaintext) and builds a Python object per A-XDR member (at most one
# member per input byte, ~100 bytes each). Inputs here are at most a few KiB, so
# 2 MiB is a generous bound that a leak or an allocation sized by a lying length
# field (4 GiB) could not stay under.
PEAK_BYTES = 2 << 20


@dataclass
class Stats:
    inputs: int = 0
    slowest: float = 0.0
    slowest_what: str = ""
    largest: int = 0
    largest_what: str = ""
    retried: int = 0
    per_test: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def report(self) -> str:
        took = time.perf_counter() - self.started
        return (f"fuzz ({PROFILE} profile): {self.inputs} inputs in {took:.0f} s; per test {self.per_test}\n"
                f"  slowest input {self.slowest * 1000:.1f} ms ({self.slowest_what}), {self.retried} retried; "
                f"largest tracemalloc peak {self.largest} bytes ({self.largest_what})")


STATS = Stats()


def fuzz_settings(what: str) -> settings:
    """The Hypothesis settings of the test that checks ``what`` (its share of the budget)."""
    return settings(
        max_examples=max(10, int(BUDGET_SHARE[what] * SCALE)),
        deadline=None,  # timed per input by check(), with one retry
        derandomize=PROFILE != "deep" and s.DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def check(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one input through ``fn``: a result or a MeterpipeError (returned), within time and memory."""
    STATS.inputs += 1
    STATS.per_test[what] = STATS.per_test.get(what, 0) + 1
    result, seconds = _timed(fn, args)
    if seconds > MAX_SECONDS:  # once more: a loaded machine or a GC pause, or really slow?
        STATS.retried += 1
        cpu0 = time.thread_time()
        result, seconds = _timed(fn, args)
        # On a shared 2-core CI machine a 5 ms input can wait 50 ms for a core: the
        # retry fails only if the input also needed more than the budget in CPU time.
        seconds = min(seconds, time.thread_time() - cpu0)
    assert seconds <= MAX_SECONDS, f"{what}: {seconds * 1000:.0f} ms for input {_hex(args)}"
    if seconds > STATS.slowest:
        STATS.slowest, STATS.slowest_what = seconds, what
    if STATS.inputs % MEM_EVERY == 0:
        tracemalloc.start()
        try:
            s.only_meterpipe_errors(fn, *args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak <= PEAK_BYTES, f"{what}: {peak} bytes allocated for input {_hex(args)}"
        if peak > STATS.largest:
            STATS.largest, STATS.largest_what = peak, what
    return result


def _timed(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = s.only_meterpipe_errors(fn, *args)
    return result, time.perf_counter() - t0


def _hex(args: tuple[Any, ...]) -> str:
    for a in args:
        if isinstance(a, (bytes, bytearray)):
            return bytes(a[:400]).hex() + ("..." if len(a) > 400 else "")
    return repr(args)[:400]


def never_raises(fn: Callable[..., list[Push | MeterpipeError]], *args: Any) -> list[Push | MeterpipeError]:
    """A MeterDecoder entry point returns pushes and errors; raising even a MeterpipeError is a bug."""
    try:
        out = fn(*args)
    except MeterpipeError as exc:  # pragma: no cover - a failure, reported as such
        raise AssertionError(f"{fn.__qualname__} raised {exc!r} instead of returning it") from exc
    assert all(isinstance(o, (Push, MeterpipeError)) for o in out)
    return out


# --- corpus seeds -------------------------------------------------------------------

LINKED = [v for v in DLMS_VECTORS if v["transport"] in ("hdlc", "mbus")]
LINKED_OR_NONE: list[dict[str, Any] | None] = [*LINKED] or [None]
STREAMS = [bytes.fromhex(v["bytes_hex"]) for v in LINKED]
FRAMES = [f.raw for v in LINKED for f in s.link_frames(v)]
APDUS = [a for v in DLMS_VECTORS if not v["expect"].get("error") for a in s.apdus(v)]
PLAIN = [
    p
    for v in DLMS_VECTORS
    if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))
    for p in s.plaintexts(v, *keys(v))
]
KEYS = [keys(v) for v in DLMS_VECTORS if v.get("key")] or [(bytes(16), bytes(16))]


def or_random(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """A corpus sample, or random bytes when the corpus is absent."""
    return st.sampled_from(samples) if samples else st.binary(min_size=1, max_size=300)


# --- mangling -----------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A real capture (or piece of one) mangled the ways a serial line and an attacker do."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=20))
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "cut_head", "splice", "insert", "lie", "huge", "dup"]))
        i = draw(st.integers(0, n - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "cut_head":
            del data[:i]
        elif op == "splice":  # the tail of another capture from here on
            other = draw(base)
            data[i:] = other[draw(st.integers(0, max(0, len(other) - 1))) :]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "lie":  # a length-ish byte says something else
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0xFF, max(0, data[i] - 1), min(255, data[i] + 1)]))
        elif op == "huge":  # a long-form length claiming gigabytes
            data[i : i + 1] = draw(st.sampled_from([b"\x84\xff\xff\xff\xff", b"\x83\xff\xff\xff", b"\x82\xff\xff", b"\x80", b"\x85\x01\x00\x00\x00\x00"]))
        else:  # a duplicated stretch (frame, block, member)
            j = draw(st.integers(i, n))
            data[j:j] = data[i:j]
    return bytes(data)


DEEP_ARRAYS = b"\x01\x01" * 1000
DEEP_STRUCTS = b"\x02\x01" * 1000


@st.composite
def hostile(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A mutated capture, sometimes with a length field set to its worst case or nesting spliced in."""
    data = bytearray(draw(mutated(base)))
    op = draw(st.sampled_from(["none", "none", "hdlc_max", "mbus_255", "axdr_huge", "deep", "deep_tail"]))
    i = draw(st.integers(0, max(0, len(data) - 1)))
    if op == "hdlc_max":  # an HDLC header declaring 0x7FF bytes, at a flag or anywhere
        flags = [j for j, b in enumerate(data) if b == 0x7E]
        at_flag = bool(flags) and draw(st.booleans())
        j = draw(st.sampled_from(flags)) if at_flag else i
        data[j : j + 3] = b"\x7e\xa7\xff"
    elif op == "mbus_255":
        data[i:i] = b"\x68\xff\xff\x68"
    elif op == "axdr_huge":  # an array/structure count or string size of 4 GiB
        data[i:i] = draw(st.sampled_from([b"\x01\x84\xff\xff\xff\xff", b"\x02\x84\xff\xff\xff\xff",
                                          b"\x09\x84\xff\xff\xff\xff", b"\x04\x84\xff\xff\xff\xff",
                                          b"\x13\x84\xff\xff\xff\xff"]))
    elif op == "deep":
        data[i:i] = draw(st.sampled_from([DEEP_ARRAYS, DEEP_STRUCTS]))
    elif op == "deep_tail":
        data[i:] = draw(st.sampled_from([DEEP_ARRAYS, DEEP_STRUCTS])) + b"\x00"
    return bytes(data)


def inputs(samples: list[bytes], max_random: int) -> st.SearchStrategy[bytes]:
    """Random bytes, or a corpus sample mutated and maybe made hostile."""
    return st.one_of(st.binary(max_size=max_random), hostile(or_random(samples)))


STREAM_IN = inputs(STREAMS, 600)
FRAME_IN = inputs(FRAMES, 300)
APDU_IN = inputs(APDUS, 600)
_NOTIFICATION = b"\x0f\x00\x00\x00\x01\x00\x02\x02\x09\x06\x01\x00\x01\x08\x00\xff\x06\x00\x00\x00\x05"
PLAIN_IN = st.one_of(
    inputs(PLAIN, 600),
    hostile(st.just(_NOTIFICATION)),
    st.binary(max_size=300).map(lambda b: b"\x0f\x00\x00\x00\x01\x00" + b),  # a notification header, any body
)
GBT = b"\xe0\x40\x00\x01\x00\x00\x05\x0f\x00\x00\x00\x01"
