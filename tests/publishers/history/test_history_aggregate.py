"""The sans-IO core: minutes, register deltas, segments, gaps, exact units; the blob codec."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterpipe.publishers.history.aggregate import (
    GAP_S,
    MeterAggregator,
    RegisterState,
    day_bounds,
    export_delta,
    import_delta,
    quarters_of_day,
    to_milli,
    values_of,
)
from meterpipe.publishers.history.codec import (
    BlobError,
    GaugeCell,
    MinuteCells,
    decode_block,
    decode_chunk,
    decode_deltas,
    encode_block,
    encode_chunk,
    encode_deltas,
)
from meterpipe.publishers.history.query import energy_key
from tests.publishers.history.helpers import T0, ZURICH, msg, ns

S = 1_000_000_000


def feed(agg: MeterAggregator, m: object) -> bool:
    from meterpipe.common.schema import ReadingsMessage

    assert isinstance(m, ReadingsMessage)
    return agg.add(m.received_ns, values_of(m.push.readings), m.push.meter_id)


def test_minute_holds_mean_min_max_count_and_last_register() -> None:
    agg = MeterAggregator()
    for i, (power, wh) in enumerate([(100, 1000), (300, 1001), (200, 1003)]):
        feed(agg, msg(T0 + timedelta(seconds=10 * i), wh, power_w=power))
    feed(agg, msg(T0 + timedelta(seconds=60), 1004))  # opens the next minute
    (m,) = agg.take_closed()
    g = m.gauges["active_power_import"]
    assert (g.count, g.mean(), g.low(), g.high()) == (3, 200.0, 100.0, 300.0)
    assert m.gauges["voltage_l1"].mean() == 230.1
    assert m.registers["active_energy_import"] == 1_003_000  # mWh
    assert m.deltas["active_energy_import"] == 3_000  # the first push starts the segment: 0
    assert m.pushes == 3 and m.meter_id == "LGZ1030655933512"
    assert "logical_device_name" not in m.gauges and "logical_device_name" not in m.registers
    assert m.units == {"active_energy_import": "Wh", "active_energy_export": "Wh",
                       "active_power_import": "W", "voltage_l1": "V"}
    assert m.state.values["active_energy_import"] == 1_003_000 and m.state.last_ns == ns(T0) + 20 * S


def test_delta_is_booked_in_the_quarter_of_the_later_push() -> None:
    agg = MeterAggregator()
    feed(agg, msg(T0 + timedelta(minutes=14, seconds=50), 1000))
    feed(agg, msg(T0 + timedelta(minutes=15, seconds=5), 1010))
    minutes = agg.take_all()
    assert [(m.quarter - minutes[0].quarter, m.deltas["active_energy_import"]) for m in minutes] == \
        [(0, 0), (1, 10_000)]


def test_register_going_down_starts_a_new_segment() -> None:
    agg = MeterAggregator()
    for i, wh in enumerate([5000, 5010, 3, 8]):
        feed(agg, msg(T0 + timedelta(minutes=i), wh))
    deltas = [m.deltas["active_energy_import"] for m in agg.take_all()]
    assert deltas == [0, 10_000, 0, 5_000]


def test_step_over_a_gap_is_booked_and_flagged() -> None:
    agg = MeterAggregator()
    feed(agg, msg(T0, 1000))
    feed(agg, msg(T0 + timedelta(seconds=GAP_S), 1001))  # exactly GAP_S: no gap
    feed(agg, msg(T0 + timedelta(seconds=2 * GAP_S + 1), 1100))
    minutes = agg.take_all()
    assert [(m.gap, m.deltas["active_energy_import"]) for m in minutes] == [(False, 0), (False, 1000), (True, 99_000)]


def test_kwh_is_converted_exactly_and_old_pushes_are_refused() -> None:
    agg = MeterAggregator(RegisterState(ns(T0), {"active_energy_import": 567_890_100_000}))
    assert not feed(agg, msg(T0, 1, kwh=True))  # not after the state's last push
    assert feed(agg, msg(T0 + timedelta(seconds=1), 567_890_101, kwh=True))  # 567890.101 kWh
    (m,) = agg.take_all()
    assert m.registers["active_energy_import"] == 567_890_101_000
    assert m.deltas["active_energy_import"] == 1_000  # 0.001 kWh = 1 Wh = 1000 mWh
    assert agg.out_of_order == 1


def test_to_milli_rounds_finer_than_milli() -> None:
    assert to_milli(12345, -4, 3) == 1235  # 1.2345 Wh -> 1235 mWh (half away from zero)
    assert to_milli(5, 0, 6) == 5_000_000  # 5 kWh
    assert to_milli(-15, -1, 3) == -1500


def test_import_delta_uses_total_else_tariffs() -> None:
    assert import_delta({"active_energy_import": 5, "active_energy_import_t1": 3}) == 5
    assert import_delta({"active_energy_import_t1": 3, "active_energy_import_t2": 4, "active_energy_export": 9}) == 7


def test_export_delta_uses_total_else_tariffs_ints_or_floats() -> None:
    assert export_delta({"active_energy_export": 5, "active_energy_export_t1": 3, "active_energy_import": 1}) == 5
    assert export_delta({"active_energy_export_t1": 1.5, "active_energy_export_t2": 2.25}) == 3.75
    assert export_delta({"active_energy_import_t1": 4}) == 0 and import_delta({"active_energy_import": 2.5}) == 2.5


def test_dst_days_have_92_and_100_quarters() -> None:
    assert len(quarters_of_day(date(2026, 3, 29), ZURICH)) == 92
    assert len(quarters_of_day(date(2026, 10, 25), ZURICH)) == 100
    assert len(quarters_of_day(date(2026, 5, 1), ZURICH)) == 96
    start, end = day_bounds(date(2026, 3, 29), date(2026, 3, 29), ZURICH)
    assert end - start == 23 * 3600


@pytest.mark.parametrize(("name", "unit", "key"), [
    ("active_energy_import", "Wh", "import_wh"), ("active_energy_import_t1", "Wh", "import_t1_wh"),
    ("active_energy_export_l2", "Wh", "export_l2_wh"), ("reactive_energy_import", "varh", "reactive_import_varh"),
    ("reactive_energy_q1", "varh", "reactive_q1_varh"), ("apparent_energy", "VAh", "apparent_energy_vah"),
])
def test_energy_key(name: str, unit: str, key: str) -> None:
    assert energy_key(name, unit) == key


# --- codec -------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(0, 59), st.tuples(
    st.dictionaries(st.integers(1, 20), st.builds(lambda m, e: GaugeCell(1, m, m, m, e), st.integers(-10**15, 10**15),
                                                  st.integers(-6, 3)), max_size=4),
    st.dictionaries(st.integers(21, 30), st.integers(0, 10**15), max_size=3)), max_size=60))
def test_minute_block_round_trips(minutes: dict[int, tuple[dict[int, GaugeCell], dict[int, int]]]) -> None:
    block = {o: MinuteCells(dict(g), dict(r)) for o, (g, r) in minutes.items()}
    want = {o: ({q: (c.count, c.mean(), c.low(), c.high()) for q, c in m.gauges.items()}, m.registers)
            for o, m in block.items()}
    got = decode_block(encode_block(block))
    assert {o: ({q: (c.count, c.mean(), c.low(), c.high()) for q, c in m.gauges.items()}, m.registers)
            for o, m in got.items()} == want


def test_gauge_merge_keeps_exact_sum_across_exponents() -> None:
    a = GaugeCell(2, 4602, 2301, 2301, -1)  # 230.1 V twice
    a.merge(GaugeCell(1, 23, 23, 23, 1))  # 230 V at exponent 1
    assert (a.count, a.total, a.exp, a.low(), a.high()) == (3, 6902, -1, 230.0, 230.1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(-10**9, 10**9), st.integers(0, 10**12)),
                min_size=1, max_size=80), st.integers(-3, 2))
def test_chunk_and_deltas_round_trip(rows: list[tuple[int, int, int]], exp: int) -> None:
    t0 = 1_777_000_000 * S
    times, acc = [], t0
    for step, _, _ in rows:
        acc += step * 1_000_000
        times.append(acc)
    got_t, cols = decode_chunk(times[0], encode_chunk(times[0], times, [(7, exp), (9, -3)],
                                                        [[g, r] for _, g, r in rows]))
    assert got_t == times
    assert cols[7] == [float(g * 10**exp) if exp >= 0 else g / 10**-exp for _, g, _ in rows]
    deltas = {q: g for q, (_, g, _) in enumerate(rows)}
    assert decode_deltas(encode_deltas(deltas)) == deltas


def test_foreign_blob_raises_blob_error() -> None:
    with pytest.raises(BlobError):
        decode_block(b"not zlib at all")
