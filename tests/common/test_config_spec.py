"""The settings page's field specs and the loaders agree: every field the page shows is a
setting the loader accepts, and every setting the loader accepts is shown or listed as
left to the file (NOT_IN_FORMS)."""

from __future__ import annotations

from typing import Any

import pytest

from meterpipe.common.config import config_from_dict
from meterpipe.common.config_spec import METER, NOT_IN_FORMS, SECTIONS, TableSpec, form_value
from meterpipe.common.errors import ConfigError

KEY = "00112233445566778899aabbccddeeff"
BASE_METER = {"name": "house", "port": "/dev/null"}
SAMPLES: dict[str, str] = {"text": "x", "int": "3", "float": "2.5", "bool": "on", "path": "data/p",
                           "secret": KEY}
SPECIAL = {"listen": "127.0.0.1:8099", "timezone": "Europe/Zurich", "port": "1883", "host": "127.0.0.1",
           "ca_file": None, "retention_days": "7", "recent_hours": "24", "name": "house", "currency": "CHF"}


def _document(spec: TableSpec, table: dict[str, Any]) -> dict[str, Any]:
    if spec.path == "meters":
        needs = {"key": KEY} if "auth_key" in table else {}
        return {"meters": [{**BASE_METER, **needs, **table}]}
    doc: dict[str, Any] = {}
    node = doc
    parts = spec.path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = table
    if spec.path == "publishers.mqtt" and "password" in table:
        table["username"] = "u"
    return doc


def _accepted(spec: TableSpec) -> set[str]:
    """The settings the loader takes in this table, from its own "valid settings" message."""
    with pytest.raises(ConfigError) as err:
        config_from_dict(_document(spec, {"zzqqxxww": 1}))
    message = str(err.value)
    assert "valid settings here: " in message, message
    return {n.strip() for n in message.split("valid settings here: ", 1)[1].split(",")}


ALL = [METER, *SECTIONS.values()]


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.path)
def test_every_field_is_a_setting_the_loader_accepts(spec: TableSpec) -> None:
    for f in spec.fields:
        if f.name == "ca_file":
            continue  # a file that must exist: tested in the settings tests with an upload
        text = SPECIAL.get(f.name) or (f.choices[-1] if f.kind == "choice" else SAMPLES[f.kind])
        value = form_value(f, text, spec.path) if f.kind != "secret" else text
        config_from_dict(_document(spec, {f.name: value}))  # raises on a disagreement


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.path)
def test_every_accepted_setting_is_in_a_form_or_left_to_the_file(spec: TableSpec) -> None:
    shown = {f.name for f in spec.fields}
    accepted = _accepted(spec) - {"zzqqxxww"}
    secret_forms = {f"{f.name}{s}" for f in spec.fields if f.kind == "secret" for s in ("_file", "_env")}
    missing = accepted - shown - set(NOT_IN_FORMS[spec.path]) - secret_forms
    assert not missing, f"{spec.path}: settings neither in the form nor in NOT_IN_FORMS: {sorted(missing)}"
    stale = (shown | set(NOT_IN_FORMS[spec.path])) - accepted
    assert not stale, f"{spec.path}: named here but not accepted by the loader: {sorted(stale)}"


def test_choices_are_the_loaders() -> None:
    for value in METER.field("link").choices:
        config_from_dict({"meters": [{**BASE_METER, "link": value}]})
    for value in METER.field("model").choices[1:]:
        config_from_dict({"meters": [{**BASE_METER, "model": value}]})


def test_a_form_number_that_is_not_one_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        form_value(METER.field("baudrate"), "fast", "meters.house")
    assert err.value.field == "meters.house.baudrate"
