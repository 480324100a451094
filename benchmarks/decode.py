"""meterpipe's decoder against the reference collector: same bytes, same run.

For each capture both sides turn the same HDLC bytes into readings:

* meterpipe: ``MeterDecoder.feed(all bytes of the capture)`` -> ``Push``;
* reference: smartmeter-datacollector 2.0.0 (gurux-dlms 1.0.203), driven per
  frame as its ``SerialHdlcDlmsMeter._data_received`` does (see _reference.py).

Both run pinned to the same single CPU, one after the other (runs interleaved
per capture), after a warm-up; each figure is the median of N runs of at least
S seconds. The primary figures are the encrypted pushes; unencrypted captures
the reference supports form a secondary table. The last line printed is one
JSON object.

    python benchmarks/decode.py [--seconds 1] [--runs 5] [--no-reference]

Exit codes: 0 done, 1 a side failed to decode or install, 2 no corpus.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _harness
import _reference

if TYPE_CHECKING:
    from meterpipe.decoder.session import MeterDecoder

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "vectors.json"
NOW_NS = 1_700_000_000_000_000_000  # fixed receive time: the clock is not what we measure


@dataclass(frozen=True, slots=True)
class Case:
    """One capture as both sides see it."""

    cap_id: str
    label: str
    model: str  # meterpipe model hint
    profile: str  # reference meter class
    encrypted: bool
    frames: tuple[bytes, ...]
    key: bytes | None
    auth_key: bytes | None

    @property
    def data(self) -> bytes:
        return b"".join(self.frames)


# Encrypted pushes (the primary figures): id -> (label, model, reference profile)
PRIMARY = {
    "sdc-lg-e450-ch-enc-gbt-nopushlist": ("e450-enc", "e450", "default"),
    "sdc-lg-e570-ch-enc-gbt": ("e570-enc", "e570", "lge570"),
    "dlmsp-lg-e450-enc-gbt-1": ("e450-enc-auth", "e450", "default"),
}
# Unencrypted captures the reference decodes to data points (secondary table).
# Not here: sdc-lg-e450-ch-broken-dup-block (deliberately broken) and
# sdc-lg-e450-ch-unenc-extreg (the reference maps none of its registers).
SECONDARY = {
    "sdc-lg-e450-ch-unenc-gbt-2msgs": ("e450-gbt", "e450", "default"),
    "sdc-lg-e450-ch-unenc-gbt-altcfg": ("e450-gbt-altcfg", "e450", "default"),
    "sdc-lg-e450-ch-unenc-vse2026": ("e450-vse2026", "e450", "default"),
    "sdc-lg-e570-ch-unenc-vse2026": ("e570-vse2026", "e570", "lge570"),
    "sdc-lg-e570-ch-unenc-vse2026-load": ("e570-vse2026-load", "e570", "lge570"),
    "sdc-lg-e360-ch-unenc-vse2026": ("e360-vse2026", "e360", "lge360"),
    "sdc-iskra-am550-ch-unenc-hdlcseg": ("am550-hdlcseg", "am550", "iskraam550"),
    "sdc-iskra-am550-ch-unenc-vse2026-hdlcseg": ("am550-vse2026-hdlcseg", "am550", "iskraam550"),
}


class BenchError(RuntimeError):
    """A side did not decode a capture as it must before timing."""


def corpus_path() -> Path:
    env = os.environ.get("METERPIPE_CORPUS")
    return Path(env) if env else DEFAULT_CORPUS


def load_cases(path: Path, table: dict[str, tuple[str, str, str]]) -> list[Case]:
    vectors = {v["id"]: v for v in json.loads(path.read_text())}
    cases = []
    for cap_id, (label, model, profile) in table.items():
        v = vectors.get(cap_id)
        if v is None:
            raise BenchError(f"capture {cap_id} is not in {path}")
        cases.append(Case(
            cap_id=cap_id, label=label, model=model, profile=profile,
            encrypted=bool(v["encrypted"]),
            frames=tuple(bytes.fromhex(f) for f in v["frames_hex"]),
            key=bytes.fromhex(v["key"]) if v.get("key") else None,
            auth_key=bytes.fromhex(v["auth_key"]) if v.get("auth_key") else None,
        ))
    return cases


# --- meterpipe side -----------------------------------------------------------


@dataclass(slots=True)
class MeterpipeLoop:
    """Feeds one capture to meterpipe's decoder, as the decoder process would."""

    case: Case
    feed_once: Callable[[], int] = field(init=False)
    replay: str = field(init=False)
    pushes_per_feed: int = field(init=False)
    readings: tuple[int, ...] = field(init=False)
    rejected: tuple[str, ...] = field(init=False)  # errors the first feed also reported

    def __post_init__(self) -> None:
        from meterpipe.common.schema import LinkLayer
        from meterpipe.common.values import Push
        from meterpipe.decoder.session import MeterDecoder

        case = self.case
        data = case.data

        def new() -> MeterDecoder:
            return MeterDecoder("bench", key=case.key, auth_key=case.auth_key,
                                link=LinkLayer.HDLC, model=case.model)

        def pushes(out: Sequence[object]) -> list[Push]:
            return [p for p in out if isinstance(p, Push) and p.readings]

        first = new()
        if not case.encrypted:
            self.replay = "n/a (unencrypted)"
            dec = first

            def feed_once() -> int:
                return len(pushes(dec.feed(data, NOW_NS)))
        elif hasattr(first, "reset_replay_state"):
            self.replay = "one decoder, reset_replay_state() after each push"
            dec = first

            def feed_once() -> int:
                n = len(pushes(dec.feed(data, NOW_NS)))
                dec.reset_replay_state()
                return n
        else:
            self.replay = "fresh MeterDecoder per push (no replay-reset hook)"

            def feed_once() -> int:
                return len(pushes(new().feed(data, NOW_NS)))

        outcomes = new().feed(data, NOW_NS)
        check = pushes(outcomes)
        self.rejected = tuple(f"{type(o).__name__}: {o}" for o in outcomes if not isinstance(o, Push))
        counts = [feed_once() for _ in range(3)]
        if not check or any(c != len(check) for c in counts):
            raise BenchError(
                f"{case.cap_id}: meterpipe decoded {len(check)} push(es) with readings, "
                f"then {counts} on repeated feeds"
            )
        self.feed_once = feed_once
        self.pushes_per_feed = len(check)
        self.readings = tuple(len(p.readings) for p in check)

    def run(self, seconds: float) -> float:
        feed_once = self.feed_once
        n = 0
        clock = time.perf_counter
        start = clock()
        deadline = start + seconds
        while True:
            n += feed_once()
            now = clock()
            if now >= deadline:
                return n / (now - start)


# --- harness ------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    case: Case
    mp_runs: list[float] = field(default_factory=list)
    ref_runs: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def mp(self) -> float | None:
        return statistics.median(self.mp_runs) if self.mp_runs else None

    @property
    def ref(self) -> float | None:
        return statistics.median(self.ref_runs) if self.ref_runs else None

    @property
    def ratio(self) -> float | None:
        mp, ref = self.mp, self.ref
        return mp / ref if mp is not None and ref else None

    @property
    def paired_ratio(self) -> float | None:
        """Median of run-by-run ratios: each pair ran back to back, so drift cancels."""
        pairs = [m / r for m, r in zip(self.mp_runs, self.ref_runs) if r]
        return statistics.median(pairs) if pairs else None

    def line(self) -> str:
        mp = f"{self.mp:,.0f} pushes/s" if self.mp is not None else "n/a"
        ref = f"{self.ref:,.0f} pushes/s" if self.ref is not None else "n/a"
        ratio = f"{self.ratio:.1f}x" if self.ratio is not None else "n/a"
        text = f"{self.case.label}: meterpipe {mp}, reference {ref}, ratio {ratio}"
        error = self.info.get("meterpipe_error")
        return f"{text} (meterpipe: {error})" if error else text

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.case.cap_id, "label": self.case.label, "encrypted": self.case.encrypted,
            "meterpipe_pushes_per_s": _round(self.mp), "reference_pushes_per_s": _round(self.ref),
            "ratio": _round(self.ratio, 2),
            "ratio_paired_median": _round(self.paired_ratio, 2),
            "meterpipe_runs": [round(r, 1) for r in self.mp_runs],
            "reference_runs": [round(r, 1) for r in self.ref_runs],
            **self.info,
        }


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def geomean(xs: Sequence[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs and all(x > 0 for x in xs) else None


def measure(cases: list[Case], ref: _reference.ReferenceDriver | None,
            seconds: float, runs: int, warmup: float) -> list[Result]:
    results = []
    for case in cases:
        res = Result(case)
        loop: MeterpipeLoop | None = None
        try:
            loop = MeterpipeLoop(case)
        except ImportError as exc:
            res.info["meterpipe_error"] = f"meterpipe's decoder is not importable: {exc}"
        except BenchError as exc:
            res.info["meterpipe_error"] = str(exc)
        if loop is not None:
            res.info.update(meterpipe_pushes_per_feed=loop.pushes_per_feed,
                            meterpipe_readings=list(loop.readings), meterpipe_replay=loop.replay)
            if loop.rejected:
                res.info["meterpipe_rejected"] = list(loop.rejected)
        if ref is not None:
            loaded = ref.load(case.cap_id, list(case.frames), case.key, case.profile)
            res.info.update(reference_pushes_per_feed=loaded.pushes_per_feed,
                            reference_data_points=list(loaded.data_points))
            ref.run(case.cap_id, warmup)
        if loop is not None:
            loop.run(warmup)
        for _ in range(runs):  # interleaved, so drift hits both sides alike
            if ref is not None:
                res.ref_runs.append(ref.run(case.cap_id, seconds).pushes_per_s)
            if loop is not None:
                res.mp_runs.append(loop.run(seconds))
        log.debug("%s done", case.cap_id)
        results.append(res)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=1.0, help="length of one run, encrypted pushes (default 1)")
    p.add_argument("--runs", type=int, default=5, help="runs per capture and side; the median is reported (default 5)")
    p.add_argument("--secondary-seconds", type=float, default=None,
                   help="length of one run for the unencrypted table (default: half of --seconds)")
    p.add_argument("--no-secondary", action="store_true", help="skip the unencrypted table")
    p.add_argument("--no-reference", action="store_true", help="meterpipe only (e.g. offline)")
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin both sides to (default: lowest allowed)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1:
        p.error("--seconds must be > 0 and --runs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="# %(message)s")
    # the decoder warns once per decoder about pushes without an auth key: not
    # what is measured here, and it would clutter the output
    logging.getLogger("meterpipe").setLevel(logging.ERROR)
    args = parse_args(argv)
    path = corpus_path()
    if not path.is_file():
        print(f"corpus not found at {path} (set METERPIPE_CORPUS): nothing to measure")
        return 2
    try:
        primary = load_cases(path, PRIMARY)
        secondary = [] if args.no_secondary else load_cases(path, SECONDARY)
    except (BenchError, OSError, ValueError, KeyError) as exc:
        print(f"corpus at {path} unusable: {exc}")
        return 2

    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    sec2 = args.secondary_seconds if args.secondary_seconds is not None else args.seconds / 2
    warmup = round(min(0.3, args.seconds / 3), 3)

    ref: _reference.ReferenceDriver | None = None
    try:
        if not args.no_reference:
            ref = _reference.ReferenceDriver(_reference.ensure_reference(), cpu)
        results = measure(primary, ref, args.seconds, args.runs, warmup)
        for r in results:
            print(r.line())
        extra = measure(secondary, ref, sec2, args.runs, warmup)
    except BenchError as exc:
        print(f"error: {exc}")
        return 1
    except _reference.ReferenceSetupError as exc:
        print(f"error: {exc}\n(--no-reference measures meterpipe alone)")
        return 1
    finally:
        if ref is not None:
            ref.close()

    mp = geomean([r.mp for r in results if r.mp is not None])
    rf = geomean([r.ref for r in results if r.ref is not None])
    ratio = mp / rf if mp is not None and rf is not None else None
    mp_text = f"{mp:,.0f} pushes/s" if mp is not None else "n/a"
    rf_text = f"{rf:,.0f} pushes/s" if rf is not None else "n/a"
    ratio_text = f"{ratio:.1f}x" if ratio is not None else "n/a"
    print(f"geometric mean over {len(results)} encrypted pushes: "
          f"meterpipe {mp_text}, reference {rf_text}, ratio {ratio_text}")
    if extra:
        print(f"unencrypted captures (runs of {sec2:g} s):")
        for r in extra:
            print("  " + r.line())
    summary = {
        "meterpipe_pushes_per_s": _round(mp), "reference_pushes_per_s": _round(rf),
        "ratio": _round(ratio, 2),
        "per_capture": [r.as_json() for r in results + extra],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**_harness.machine(), "pinned_cpu": cpu},
        "settings": {"seconds": args.seconds, "secondary_seconds": sec2, "runs": args.runs,
                     "warmup_seconds": warmup, "statistic": "median"},
        "reference": None if ref is None else {
            "versions": ref.versions,
            "path": "HdlcDlmsParser per frame, as SerialHdlcDlmsMeter._data_received",
        },
    }
    print(json.dumps(summary))
    return 1 if any("meterpipe_error" in r.info for r in results + extra) else 0


if __name__ == "__main__":
    sys.exit(main())
