"""The JSON API through Starlette's test client, on a database the real HistoryWriter filled."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterpipe.common.config import load_config
from meterpipe.publishers.history.query import HistoryReader
from tests.web.conftest import ZONE, History, client_for, config_for, write_config


@pytest.fixture
def client(tmp_path: Path, history: History):
    with client_for(config_for(tmp_path, history)) as c:
        yield c


def today() -> date:
    return datetime.now(ZoneInfo(ZONE)).date()


def test_meters_lists_the_meter_with_its_last_push(client, history: History) -> None:
    body = client.get("/api/meters").json()
    assert [m["meter"] for m in body] == ["house", "dsmr", "dst"]  # the config's first, then the history's
    assert body[0]["meter_id"] == "LGZ1030655933512"
    last = datetime.fromisoformat(body[0]["last_push"])
    assert last.utcoffset() is not None and abs(last.timestamp() - history.end_s) < 61


def test_energy_days_equal_the_register_differences(client, history: History) -> None:
    first = today() - timedelta(days=2)
    rows = client.get("/api/energy", params={"meter": "house", "step": "day", "from": str(first),
                                             "to": str(today())}).json()
    assert [r["start"][:10] for r in rows] == [str(first + timedelta(days=i)) for i in range(len(rows))]
    for r in rows:
        assert set(r) >= {"start", "import_wh", "export_wh", "import_t1_wh", "import_t2_wh", "gap"}
        assert r["import_wh"] == pytest.approx(r["import_t1_wh"] + r["import_t2_wh"])
    hours = client.get("/api/energy", params={"meter": "house", "step": "hour", "from": str(first),
                                              "to": str(first)}).json()
    assert sum(h["import_wh"] for h in hours) == pytest.approx(rows[0]["import_wh"])
    assert datetime.fromisoformat(hours[0]["start"]).tzinfo is not None


def test_energy_matches_the_reader(client, history: History) -> None:
    reader = HistoryReader(history.path, ZoneInfo(ZONE))
    try:
        want = reader.energy("house", "hour", today(), today())
    finally:
        reader.close()
    got = client.get("/api/energy", params={"meter": "house", "step": "hour"}).json()
    assert [r["import_wh"] for r in got] == [w.deltas.get("active_energy_import", 0) for w in want]


@pytest.mark.parametrize(("query", "parameter", "status"), [
    ({"meter": "nope"}, "meter", 404),
    ({"meter": "house", "step": "week"}, "step", 400),
    ({"meter": "house", "from": "2026-13-01"}, "from", 400),
    ({"meter": "house", "from": "2026-03-02", "to": "2026-03-01"}, "to", 400),
])
def test_energy_refuses_bad_parameters_by_name(client, query, parameter, status) -> None:
    r = client.get("/api/energy", params=query)
    assert r.status_code == status
    assert r.json()["parameter"] == parameter and r.json()["error"]


def test_series_gives_points_and_refuses_an_unknown_quantity(client, history: History) -> None:
    start = datetime.fromtimestamp(history.end_s - 3600, ZoneInfo(ZONE))
    points = client.get("/api/series", params={"meter": "house", "name": "active_power_import",
                                               "from": start.isoformat()}).json()
    assert 55 <= len(points) <= 61
    assert all(isinstance(v, float) for _, v in points)
    assert datetime.fromisoformat(points[0][0]) >= start - timedelta(milliseconds=1)
    bad = client.get("/api/series", params={"meter": "house", "name": "nothing"})
    assert bad.status_code == 404 and bad.json()["parameter"] == "name"
    assert client.get("/api/series", params={"meter": "house", "from": "yesterday"}).json()["parameter"] == "from"


def test_now_without_a_push_says_why(client) -> None:
    r = client.get("/api/now", params={"meter": "house"})
    assert r.status_code == 404
    assert "no push from meter 'house' yet" in r.json()["error"]


def test_costs_price_the_energy(client) -> None:
    body = client.get("/api/costs", params={"meter": "house", "step": "day", "from": str(today() - timedelta(days=1)),
                                            "to": str(today())}).json()
    for row in body["rows"]:
        assert row["import_cost"] == pytest.approx(row["import_wh"] / 1000 * 0.30, abs=1e-3)
        assert row["export_credit"] == pytest.approx(row["export_wh"] / 1000 * 0.10, abs=1e-3)
    assert body["total"]["currency"] == "CHF"
    assert body["total"]["fee"] == pytest.approx(sum(r["fee"] for r in body["rows"]), abs=1e-3)


def test_peaks_and_status(client) -> None:
    peaks = client.get("/api/peaks", params={"meter": "house", "from": str(today() - timedelta(days=2))}).json()
    assert peaks and all(p["mean_w"] > 0 for p in peaks)
    status = client.get("/api/status").json()
    assert "house" in status["meters"] and "processes" in status


def test_export_csv_hour_and_minute(client) -> None:
    day = str(today() - timedelta(days=1))
    r = client.get("/export.csv", params={"meter": "house", "step": "hour", "from": day, "to": day})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert 23 <= len(rows) <= 25 and "import_wh" in rows[0]
    minute = client.get("/export.csv", params={"meter": "house", "step": "minute", "from": day, "to": day})
    assert len(minute.text.splitlines()) > 1000
    too_long = client.get("/export.csv", params={"meter": "house", "step": "minute", "from": "2026-01-01",
                                                 "to": "2026-12-31"})
    assert too_long.status_code == 400 and too_long.json()["parameter"] == "to"


def test_no_cors_and_no_secret_in_any_answer(client) -> None:
    for url in ("/api/meters", "/api/status", "/", "/status", "/costs"):
        r = client.get(url, headers={"Origin": "http://evil.example"})
        assert r.status_code == 200
        assert not any(h.lower().startswith("access-control-") for h in r.headers)
        assert "key" not in r.text.lower().replace("keyboard", "") or url in ("/", "/status", "/costs")


@pytest.mark.parametrize("url", ["/", "/live", "/history", "/history?view=month", "/history?view=year", "/peaks",
                                 "/costs", "/export", "/status", "/login"])
def test_every_page_renders(client, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 200 and "<nav" in r.text


def test_a_page_with_a_bad_parameter_names_it(client) -> None:
    r = client.get("/history", params={"view": "week"})
    assert r.status_code == 400 and "view" in r.text


def test_a_history_database_that_cannot_answer_gives_503_naming_it(tmp_path: Path, history: History) -> None:
    """A damaged file (here: its pages overwritten) is a 503 that says where to look, never a 500."""
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(history.path.read_bytes()[:8192] + b"\xff" * 65536)
    client = client_for(load_config(str(write_config(tmp_path, broken))))
    for url in ("/api/energy?meter=house&step=day", "/api/meters"):
        r = client.get(url)
        assert r.status_code == 503, (url, r.status_code, r.text[:200])
        assert r.json()["parameter"] == "history" and "history process" in r.json()["error"]
    page = client.get("/history")
    assert page.status_code == 503 and "history database cannot answer" in page.text
