"""Forms of the settings page <-> the config's public view (pure: no request, no file).

A form is generated from a :class:`~meterpipe.common.config_spec.TableSpec`; what comes
back becomes a table of the view that :func:`meterpipe.common.config_file.save`
validates with the processes' own loader. A secret field left empty keeps the stored
value (its state object stays in the view), one with text replaces it, and its
"clear" box removes it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterpipe.common.config_spec import METER, FieldSpec, TableSpec, form_value, shown_value
from meterpipe.common.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ShownField:
    spec: FieldSpec
    value: str  # what the input shows ("" for secrets, always)
    state: str  # secrets: "set (fingerprint 3f2a1b2c, in a file)" / "not set"; else ""
    error: str = ""


def table_at(view: Mapping[str, Any], path: str) -> dict[str, Any]:
    node: Any = view
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


def secret_state(state: object) -> str:
    if not isinstance(state, Mapping) or not state.get("set"):
        return "not set"
    where = {"file": "in a key file", "inline": "inline in meterpipe.toml", "environment": "from the environment"}
    shown = f"set (fingerprint {state['fingerprint']}, " if state.get("fingerprint") else "set ("
    return shown + f"{where.get(str(state.get('source')), 'set')})"


def shown_fields(spec: TableSpec, table: Mapping[str, Any], form: Mapping[str, str] | None = None,
                 error: ConfigError | None = None) -> list[ShownField]:
    """The fields of a form: values from ``form`` when re-shown after an error, else from ``table``."""
    wrong = error_field(error) if error is not None else None
    shown = []
    for f in spec.fields:
        if f.kind == "secret":
            value, state = "", secret_state(table.get(f.name))
            if form is not None and str(form.get(f.name, "")).strip():
                state = "the value you typed was not saved: enter it again"
        elif form is not None:
            value, state = str(form.get(f.name, "")), ""
        elif f.kind == "bool" and f.name not in table:
            value, state = ("on" if f.default else ""), ""  # an unset switch shows its default
        else:
            value, state = shown_value(f, table.get(f.name)), ""
        message = error.message.split(": ", 1)[-1] if error is not None and wrong == f.name else ""
        shown.append(ShownField(f, value, state, message))
    return shown


def error_field(error: ConfigError | None) -> str:
    """The form field a loader error is about: ``meters.garage.key_file`` -> ``key``."""
    if error is None:
        return ""
    last = error.field.rsplit(".", 1)[-1]
    if "[" in last:  # meters[1].name
        last = last.split("[", 1)[0] if last.endswith("]") else last
    for suffix in ("_file", "_env"):
        if last.endswith(suffix) and last[: -len(suffix)] in ("key", "auth_key", "password"):
            return last[: -len(suffix)]
    return last


def table_from_form(spec: TableSpec, form: Mapping[str, str], old: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The view's table for ``spec`` after the form: settings the form does not show stay."""
    table = dict(old)
    for f in spec.fields:
        if f.kind == "secret":
            if form.get(f"clear_{f.name}"):
                table[f.name] = None
            elif str(form.get(f.name, "")).strip():
                table[f.name] = str(form[f.name])
            continue  # else the state object stays: the stored value is kept
        value = form_value(f, str(form.get(f.name, "")), path)
        if value is None or (value == f.default and f.name not in old):
            table.pop(f.name, None)
        else:
            table[f.name] = value
    return table


def meter_table(form: Mapping[str, str], old: Mapping[str, Any]) -> dict[str, Any]:
    name = str(form.get("name", "")).strip() or "?"
    return table_from_form(METER, form, old, f"meters.{name}")


def with_meter(view: Mapping[str, Any], table: Mapping[str, Any], was: str | None) -> dict[str, Any]:
    """The view with meter ``was`` replaced by ``table`` (or ``table`` appended when new)."""
    wanted = copy.deepcopy(dict(view))
    meters = [dict(m) for m in wanted.get("meters") or [] if isinstance(m, Mapping)]
    entry = dict(table)
    if was is not None:
        entry["was"] = was
        meters = [entry if m.get("name") == was else m for m in meters]
        if not any(m is entry for m in meters):
            raise ConfigError(f"meters.{was}", "no such meter (removed meanwhile?)")
    else:
        meters.append(entry)
    wanted["meters"] = meters
    return wanted


def without_meter(view: Mapping[str, Any], name: str) -> dict[str, Any]:
    wanted = copy.deepcopy(dict(view))
    wanted["meters"] = [m for m in wanted.get("meters") or [] if not (isinstance(m, Mapping)
                                                                        and m.get("name") == name)]
    return wanted


def with_table(view: Mapping[str, Any], path: str, table: Mapping[str, Any]) -> dict[str, Any]:
    wanted = copy.deepcopy(dict(view))
    node = wanted
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if table:
        node[parts[-1]] = dict(table)
    else:
        node.pop(parts[-1], None)
    return wanted


def patched(view: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``PATCH /api/config``: tables merge key by key (``null`` removes a setting, or clears a
    secret); ``meters`` entries merge by ``name`` (``"was"`` renames, ``"remove": true`` drops,
    an unknown name is added)."""
    if not isinstance(patch, Mapping):
        raise ConfigError("config", "expected a JSON object with the tables to change")
    wanted = copy.deepcopy(dict(view))
    for key, value in patch.items():
        if key == "meters":
            wanted["meters"] = _patched_meters(wanted.get("meters") or [], value)
        elif isinstance(value, Mapping) and isinstance(wanted.get(key), Mapping):
            wanted[key] = _merged(wanted[key], value)
        elif value is None:
            wanted.pop(key, None)
        else:
            wanted[key] = copy.deepcopy(value)
    return wanted


_SECRETS = ("key", "auth_key", "password")


def _merged(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        if value is None and key not in _SECRETS:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in _SECRETS:
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _patched_meters(old: list[Any], patch: object) -> list[Any]:
    if not isinstance(patch, list) or not all(isinstance(m, Mapping) and "name" in m for m in patch):
        raise ConfigError("meters", 'expected a list of meter objects, each with "name"')
    meters = [dict(m) for m in old if isinstance(m, Mapping)]
    for change in patch:
        target = str(change.get("was", change["name"]))
        found = next((m for m in meters if m.get("name") == target), None)
        if change.get("remove"):
            if found is None:
                raise ConfigError(f"meters.{target}", "no such meter to remove")
            meters.remove(found)
        elif found is None:
            meters.append({k: v for k, v in change.items() if k != "was"})
        else:
            merged = _merged(found, {k: v for k, v in change.items() if k != "remove"})
            if "was" in change:
                merged["was"] = target
            meters[meters.index(found)] = merged
    return meters
