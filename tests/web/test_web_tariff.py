"""[web.tariff] parsing and the cost rules: per-register prices, time of use, fee shares."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterpipe.common.config_fields import Section
from meterpipe.common.errors import ConfigError
from meterpipe.common.web_config import TariffConfig, web_config
from meterpipe.web.tariff import fee_share, step_cost, time_price

Z = ZoneInfo("Europe/Zurich")


def tariff(data: dict[str, object]) -> TariffConfig:
    return web_config(Section("web", {"tariff": data}, None, {}), Path("/tmp")).tariff


def test_time_of_use_table() -> None:
    t = tariff({"import_price": 0.20, "time_of_use": [
        {"days": "mon-fri", "start": "07:00", "end": "20:00", "price": 0.30},
        {"days": ["sat"], "start": "08:00", "end": "12:00", "price": 0.25}]})
    assert time_price(t, datetime(2026, 3, 30, 7, 0, tzinfo=Z)) == 0.30  # Monday
    assert time_price(t, datetime(2026, 3, 30, 20, 0, tzinfo=Z)) == 0.20
    assert time_price(t, datetime(2026, 3, 28, 9, 15, tzinfo=Z)) == 0.25  # Saturday
    assert time_price(t, datetime(2026, 3, 29, 9, 15, tzinfo=Z)) == 0.20  # Sunday


def test_register_prices_win() -> None:
    t = tariff({"import_price": 0.20, "export_price": 0.05, "registers": {"t1": 0.30, "t2": 0.10}})
    c = step_cost(t, datetime(2026, 1, 1, tzinfo=Z), {"active_energy_import": 3000, "active_energy_import_t1": 1000,
                                                      "active_energy_import_t2": 2000, "active_energy_export": 500})
    assert c.import_cost == pytest.approx(0.30 + 0.20) and c.export_credit == pytest.approx(0.025)
    flat = step_cost(t, datetime(2026, 1, 1, tzinfo=Z), {"active_energy_import": 1000})
    assert flat.import_cost == pytest.approx(0.20)


def test_fee_share_by_days() -> None:
    t = tariff({"monthly_fee": 31.0})
    assert fee_share(t, date(2026, 1, 1), date(2026, 1, 31)) == pytest.approx(31.0)
    assert fee_share(t, date(2026, 1, 31), date(2026, 2, 14)) == pytest.approx(1 + 31 * 14 / 28)


@pytest.mark.parametrize(("data", "field"), [
    ({"registers": {"t9": 0.1}}, "web.tariff.registers.t9"),
    ({"time_of_use": [{"start": "25:00", "price": 0.1}]}, "start"),
    ({"time_of_use": [{"start": "10:00", "end": "09:00", "price": 0.1}]}, "end"),
    ({"time_of_use": [{"days": "mon-xyz", "price": 0.1}]}, "days"),
    ({"time_of_use": [{"days": "mon"}]}, "price"),
])
def test_bad_tariff_names_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tariff(data)
