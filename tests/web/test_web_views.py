"""The History page and the energy API on the days that trip up a calendar (the 23- and
25-hour DST days), for a meter that counts per tariff only (DSMR: 1.8.1/1.8.2, no 1.8.0),
the streamed CSV export and live register points in other units; all through Starlette's
test client on a database the real HistoryWriter filled."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from meterpipe.common.schema import ReadingsMessage
from meterpipe.common.values import Push, Reading
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.web import views
from tests.web.conftest import DST, DST_DAYS, TARIFF_ONLY, ZONE, History, client_for, config_for

BAR = re.compile(r'<div class="bar[^"]*" data-start="([^"]+)" data-import-wh="([^"]+)" data-export-wh="([^"]+)"')
SEGMENT = re.compile(r'<i class="seg [^"]*" data-tariff="[^"]*" data-wh="[^"]*" style="height: ([0-9.]+)%"')


@pytest.fixture
def client(tmp_path: Path, history: History) -> Any:
    with client_for(config_for(tmp_path, history)) as c:
        yield c


def today() -> date:
    return datetime.now(ZoneInfo(ZONE)).date()


def day_total(client: Any, meter: str, day: date) -> dict[str, Any]:
    rows = client.get("/api/energy", params={"meter": meter, "step": "day", "from": str(day), "to": str(day)}).json()
    assert len(rows) == 1
    return dict(rows[0])


# --- W1: the 23- and 25-hour days ---------------------------------------------------------------------


@pytest.mark.parametrize(("day", "hours"), [(DST_DAYS[0], 23), (DST_DAYS[1], 25)])
def test_history_day_view_of_a_dst_day_shows_every_hour_once(client: Any, day: date, hours: int) -> None:
    page = client.get("/history", params={"meter": DST, "view": "day", "date": str(day)})
    assert page.status_code == 200
    bars = BAR.findall(page.text)
    assert len(bars) == hours
    instants = [datetime.fromisoformat(start).timestamp() for start, _, _ in bars]
    midnight = datetime.combine(day, time(), ZoneInfo(ZONE)).timestamp()
    assert instants == [midnight + 3600 * i for i in range(hours)]  # each hour once, in order
    labels = re.findall(r'<span class="x">(\d\d)</span>', page.text)
    assert len(labels) == hours and (labels.count("02") == 2 if hours == 25 else "02" not in labels)
    total = day_total(client, DST, day)
    assert sum(float(i) for _, i, _ in bars) == pytest.approx(total["import_wh"])
    assert sum(float(e) for _, _, e in bars) == pytest.approx(total["export_wh"])
    hourly = client.get("/api/energy", params={"meter": DST, "step": "hour", "from": str(day), "to": str(day)}).json()
    assert [r["start"] for r in hourly] == [s for s, _, _ in bars]
    assert [r["import_wh"] for r in hourly] == pytest.approx([float(i) for _, i, _ in bars])


@pytest.mark.parametrize("day", DST_DAYS)
def test_history_view_of_a_dst_day_and_the_day_after(history: History, day: date) -> None:
    zone = ZoneInfo(ZONE)
    reader = HistoryReader(history.path, zone)
    try:
        from meterpipe.common.web_config import TariffConfig

        view = views.history_view(reader, DST, "day", day, TariffConfig(), zone)
        after = views.history_view(reader, DST, "day", day + timedelta(days=1), TariffConfig(), zone)
    finally:
        reader.close()
    starts = [b["start"] for b in view["bars"]]
    assert None not in starts and len(set(starts)) == len(starts)
    assert view["total"].import_wh == pytest.approx(sum(b["import_wh"] for b in view["bars"]))
    # the day after compares with the DST day: its previous total is the DST day's whole energy
    assert after["previous"].import_wh == pytest.approx(view["total"].import_wh)


# --- W2: a meter with tariff registers only ----------------------------------------------------------------


def test_tariff_only_meter_energy_api_sums_its_tariffs(client: Any) -> None:
    first = today() - timedelta(days=2)
    rows = client.get("/api/energy", params={"meter": TARIFF_ONLY, "step": "day", "from": str(first),
                                             "to": str(today())}).json()
    assert rows and all("active_energy_import" not in r for r in rows)
    for r in rows:
        assert r["import_wh"] == pytest.approx(r["import_t1_wh"] + r["import_t2_wh"]) and r["import_wh"] > 0
        assert r["export_wh"] == pytest.approx(r["export_t1_wh"] + r.get("export_t2_wh", 0))
    assert any(r["export_wh"] > 0 for r in rows)
    house = client.get("/api/energy", params={"meter": "house", "step": "day", "from": str(first),
                                              "to": str(today())}).json()
    # the same load curve: the same energy whether the meter sends the total or not
    assert [r["import_wh"] for r in rows[1:-1]] == pytest.approx([r["import_wh"] for r in house[1:-1]], rel=0.01)


def test_tariff_only_meter_costs_and_range(client: Any) -> None:
    day = today() - timedelta(days=1)
    body = client.get("/api/costs", params={"meter": TARIFF_ONLY, "step": "day", "from": str(day),
                                            "to": str(day)}).json()
    row = body["rows"][0]
    energy = day_total(client, TARIFF_ONLY, day)
    assert row["import_wh"] == pytest.approx(energy["import_wh"]) and row["import_wh"] > 0
    assert row["import_cost"] == pytest.approx(energy["import_wh"] / 1000 * 0.30, abs=1e-3)
    assert row["export_credit"] == pytest.approx(energy["export_wh"] / 1000 * 0.10, abs=1e-3)
    start = datetime.combine(day, time(10), ZoneInfo(ZONE))
    rng = client.get("/api/range", params={"meter": TARIFF_ONLY, "from": start.isoformat(),
                                           "to": (start + timedelta(hours=4)).isoformat()}).json()
    assert rng["import_wh"] > 0 or rng["export_wh"] > 0
    assert rng["import_cost"] == pytest.approx(rng["import_wh"] / 1000 * 0.30, abs=1e-3)


def test_tariff_only_meter_history_page(client: Any) -> None:
    day = today() - timedelta(days=1)
    page = client.get("/history", params={"meter": TARIFF_ONLY, "view": "day", "date": str(day)})
    bars = BAR.findall(page.text)
    assert len(bars) == 24
    energy = day_total(client, TARIFF_ONLY, day)
    assert energy["import_wh"] > 0 and sum(float(i) for _, i, _ in bars) == pytest.approx(energy["import_wh"])
    assert f'data-total="import_wh">{energy["import_wh"] / 1000:.2f}<' in page.text
    ups = page.text.split('<div class="up">')[1:]
    heights = [sum(float(h) for h in SEGMENT.findall(up.split("</div>", 1)[0])) for up in ups]
    assert len(heights) == 24 and 50 < max(heights) <= 100.01  # the top is this day's or the previous one's
    # the bars scale to the day's top (or the previous day's), not all full height
    imports = [float(i) for _, i, _ in bars]
    scale = max(heights) / max(imports)
    assert heights == pytest.approx([i * scale for i in imports], abs=0.02)


# --- W10: the CSV export streams, a day at a time -------------------------------------------------------------


def test_minute_export_reads_one_day_at_a_time(client: Any, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    first, last = today() - timedelta(days=2), today()
    spans: list[float] = []
    original = HistoryReader.minutes

    def minutes(self: HistoryReader, meter: str, start: datetime, end: datetime) -> Any:
        spans.append((end - start).total_seconds())
        return original(self, meter, start, end)

    monkeypatch.setattr(HistoryReader, "minutes", minutes)
    r = client.get("/export.csv", params={"meter": "house", "step": "minute", "from": str(first), "to": str(last)})
    assert r.status_code == 200
    assert len(spans) == 3 and max(spans) <= 25 * 3600
    monkeypatch.setattr(HistoryReader, "minutes", original)
    reader = HistoryReader(history.path, ZoneInfo(ZONE))
    try:
        header, rows = reader.minutes("house", datetime.combine(first, time(), ZoneInfo(ZONE)),
                                      datetime.combine(last + timedelta(days=1), time(), ZoneInfo(ZONE)))
    finally:
        reader.close()
    got = list(csv.reader(io.StringIO(r.text)))
    assert got[0] == header and len(got) == len(rows) + 1
    assert [g[0] for g in got[1:]] == [row[0] for row in rows]


def test_energy_export_in_chunks_equals_the_api(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first, last = today() - timedelta(days=13), today()
    calls: list[tuple[date, date]] = []
    original = HistoryReader.energy

    def energy(self: HistoryReader, meter: str, step: str, a: date, b: date) -> Any:
        calls.append((a, b))
        return original(self, meter, step, a, b)

    monkeypatch.setattr(HistoryReader, "energy", energy)
    r = client.get("/export.csv", params={"meter": TARIFF_ONLY, "step": "quarter", "from": str(first), "to": str(last)})
    assert all((b - a).days < 7 for a, b in calls)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    api = client.get("/api/energy", params={"meter": TARIFF_ONLY, "step": "quarter", "from": str(first),
                                            "to": str(last)}).json()
    assert [row["start"] for row in rows] == [a["start"] for a in api]
    assert [float(row["import_wh"]) for row in rows] == pytest.approx([a["import_wh"] for a in api])
    assert {"import_t1_wh", "import_t2_wh", "export_t1_wh", "export_wh", "gap"} <= set(rows[0])


# --- W12: live register points in MWh ---------------------------------------------------------------------------


def test_series_scales_live_registers_in_mwh_to_wh(client: Any) -> None:
    now = datetime.now(UTC)
    push = Push(readings=(Reading("1-0:1.8.0", "active_energy_import", 12_345_678, -6, "MWh"),
                          Reading("1-0:3.8.0", "reactive_energy_import", 2_500, -3, "Mvarh")),
                meter_id="X", time=None, encrypted=False, authenticated=False)
    client.app.state.site.hub.on_readings(ReadingsMessage(meter="house", seq=1, received_ns=int(now.timestamp() * 1e9),
                                                          push=push))
    params = {"meter": "house", "from": (now - timedelta(seconds=20)).isoformat(),
              "to": (now + timedelta(seconds=5)).isoformat()}
    energy = client.get("/api/series", params={**params, "name": "active_energy_import"}).json()
    assert energy[-1][1] == pytest.approx(12_345_678.0)
    reactive = client.get("/api/series", params={**params, "name": "reactive_energy_import"}).json()
    assert reactive[-1][1] == pytest.approx(2_500_000.0)


def test_shift_steps_over_year_ends() -> None:
    assert views.shift("month", date(2026, 12, 15), 1) == date(2027, 1, 1)
    assert views.shift("month", date(2026, 1, 31), -1) == date(2025, 12, 1)
    assert views.shift("month", date(2026, 3, 31), -1) == date(2026, 2, 1)
    assert views.shift("year", date(2026, 6, 1), -1) == date(2025, 1, 1)
    assert views.shift("day", date(2026, 3, 1), -1) == date(2026, 2, 28)
