"""Changing meterpipe.toml from the settings page: the public view, edits, and the merge.

Pure logic on parsed tables; :mod:`~meterpipe.common.config_file` reads and writes.

* :func:`public_view` is the file as JSON with every secret replaced by
  ``{"set": true, "fingerprint": "3f2a1b2c", "source": "file"}`` or ``None``: no value,
  no part of one.
* :func:`plan_edit` turns a wanted view (the same shape: a secret given as text is a new
  value, ``None`` clears it, the object from the view keeps it) into an :class:`Edit`:
  the new tables for the file (new secrets as ``key_file = "keys/<meter>.key"``), the
  tables to validate (the same with the new secrets inline, never written), and the
  secret files to write.
* :func:`merge_into` applies new tables to a tomlkit document, touching only what
  changed, so the user's comments and order stay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from meterpipe.common.config import Config
from meterpipe.common.config_fields import parse_key
from meterpipe.common.errors import ConfigError, fingerprint

KEYS_DIR = "keys"
SECRET_SUFFIXES = ("", "_file", "_env")
# (table path, setting) of every secret the page can set; "meters" is each [[meters]] table
SECRETS: tuple[tuple[str, str, str], ...] = (
    ("meters", "key", "key"),
    ("meters", "auth_key", "key"),
    ("publishers.mqtt", "password", "password"),
)


@dataclass(frozen=True, slots=True)
class SecretWrite:
    relative: str  # path of the file beside meterpipe.toml: "keys/house.key"
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Edit:
    tables: dict[str, Any]  # what the file will hold
    check: dict[str, Any] = field(repr=False)  # what to validate: new secrets inline, never written
    secrets: tuple[SecretWrite, ...] = ()
    changed: tuple[str, ...] = ()  # "meters.garage.port", "publishers.mqtt.password (new value)"
    retired: tuple[str, ...] = field(default=(), repr=False)  # inline secrets replaced or cleared: kept out of .bak


def _table(data: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, Mapping) else None


def _secret_state(table: Mapping[str, Any], name: str, value: bytes | str | None) -> dict[str, Any] | None:
    given = [name + s for s in SECRET_SUFFIXES if name + s in table]
    if not given:
        return None
    source = {"": "inline", "_file": "file", "_env": "environment"}[given[0][len(name):]]
    raw = value.encode() if isinstance(value, str) else value
    return {"set": True, "fingerprint": fingerprint(raw) if raw is not None else None, "source": source}


def public_view(data: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """The file's tables with every secret replaced by its state (never its value)."""
    view = copy.deepcopy(dict(data))
    meters = {m.name: m for m in config.meters}
    for table in view.get("meters") or []:
        if not isinstance(table, dict):
            continue
        meter = meters.get(str(table.get("name")))
        for name in ("key", "auth_key"):
            state = _secret_state(table, name, getattr(meter, name, None) if meter else None)
            for suffix in SECRET_SUFFIXES:
                table.pop(name + suffix, None)
            table[name] = state
    mqtt = _table(view, "publishers.mqtt")
    if isinstance(mqtt, dict):
        # no fingerprint of a password: 32 bits of its hash would let a guess be checked offline
        state = _secret_state(mqtt, "password", None)
        for suffix in SECRET_SUFFIXES:
            mqtt.pop("password" + suffix, None)
        mqtt["password"] = state
    return view


class _Secrets:
    """Settles the secrets of one edit: which stay, which are new (to fresh key files), which go."""

    def __init__(self, current: Mapping[str, Any], exists: Callable[[str], bool]) -> None:
        self.writes: list[SecretWrite] = []
        self.changed: list[str] = []
        self.retired: list[str] = []  # inline values the edit replaces or clears
        self._exists = exists
        self._taken = _referenced(current)

    def settle(self, old: Mapping[str, Any], new: dict[str, Any], check: dict[str, Any], name: str, kind: str,
               path: str, file_name: str) -> None:
        """Settle secret ``name`` of one table in ``new`` (and ``check``) from what was asked for."""
        for suffix in ("_file", "_env"):  # a source is set by hand in the file, never over the page
            if name + suffix in new and new.pop(name + suffix) != old.get(name + suffix):
                raise ConfigError(f"{path}.{name}{suffix}", f"cannot be set here: give the {name.replace('_', ' ')} "
                                  "itself (it goes to a key file), or edit the file by hand")
            check.pop(name + suffix, None)
        asked = new.pop(name) if name in new else _KEEP
        check.pop(name, None)
        kept = {name + s: old[name + s] for s in SECRET_SUFFIXES if name + s in old}
        if isinstance(asked, Mapping) or asked is _KEEP:  # the state object of the view: unchanged
            new.update(kept)
            check.update(kept)
            return
        if isinstance(old.get(name), str):
            self.retired.append(old[name])
        if asked is None or asked == "":
            if kept:
                self.changed.append(f"{path}.{name} (cleared)")
            return
        if not isinstance(asked, str):
            raise ConfigError(f"{path}.{name}", "expected the new value as text, null to clear it, or the "
                              "object GET /api/config gave to keep it")
        if kind == "key":
            data = parse_key(asked, f"{path}.{name}", f"the {name.replace('_', ' ')}").hex().encode() + b"\n"
            inline = data.decode().strip()
        else:
            if not asked.strip():
                raise ConfigError(f"{path}.{name}", "is empty")
            data = asked.encode() + b"\n"
            inline = asked
        relative = self._fresh(file_name)
        new[name + "_file"] = relative
        check[name] = inline
        self.writes.append(SecretWrite(relative, data))
        self.changed.append(f"{path}.{name} (new value, in {relative})")

    def _fresh(self, file_name: str) -> str:
        """A key file name no table refers to and no file has: a new value never overwrites a file
        the running (or the previous) config reads, so a failed save cannot leave it changed."""
        stem, dot, ext = file_name.rpartition(".")
        number = 1
        while True:
            relative = f"{KEYS_DIR}/{file_name}" if number == 1 else f"{KEYS_DIR}/{stem}-{number}{dot}{ext}"
            if relative not in self._taken and not self._exists(relative):
                self._taken.add(relative)
                return relative
            number += 1


def _referenced(tables: Mapping[str, Any]) -> set[str]:
    """Every ``*_file`` value of the secrets in ``tables``."""
    found: set[str] = set()
    meters = [t for t in tables.get("meters") or [] if isinstance(t, Mapping)]
    mqtt = _table(tables, "publishers.mqtt")
    for table, names in [*((t, ("key", "auth_key")) for t in meters), (mqtt or {}, ("password",))]:
        found.update(str(table[n + "_file"]) for n in names if isinstance(table.get(n + "_file"), str))
    return found


_KEEP: Any = object()
BROKER = ("host", "port", "tls")


def plan_edit(current: Mapping[str, Any], wanted: Mapping[str, Any],
              exists: Callable[[str], bool] = lambda relative: False) -> Edit:
    """From the file's tables and a wanted view, the new tables, what to validate and the key files.

    ``wanted`` meters are matched to the file's by ``name``; a wanted meter may carry
    ``"was": "<old name>"`` when it is renamed. ``exists`` tells whether a file beside the
    config exists (new key files get names that are free)."""
    if not isinstance(wanted, Mapping):
        raise ConfigError("config", "expected a JSON object with the config's tables")
    tables = copy.deepcopy(dict(wanted))
    secrets = _Secrets(current, exists)
    old_meters = {str(t.get("name")): t for t in current.get("meters") or [] if isinstance(t, Mapping)}
    meters = tables.get("meters")
    check = copy.deepcopy(tables)
    if isinstance(meters, list):
        check_meters = check["meters"]
        for index, table in enumerate(meters):
            if not isinstance(table, dict):
                continue
            was = table.pop("was", None)
            check_meters[index].pop("was", None)
            name = str(table.get("name"))
            old = old_meters.get(str(was) if was is not None else name, {})
            for secret in ("key", "auth_key"):
                suffix = ".key" if secret == "key" else ".auth"
                secrets.settle(old, table, check_meters[index], secret, "key", f"meters.{name}", f"{name}{suffix}")
    mqtt = _table(tables, "publishers.mqtt")
    if isinstance(mqtt, dict):
        check_mqtt = _table(check, "publishers.mqtt")
        assert isinstance(check_mqtt, dict)
        old_mqtt = _table(current, "publishers.mqtt") or {}
        keeps = isinstance(mqtt.get("password"), Mapping) or "password" not in mqtt
        if keeps and any(k.startswith("password") for k in old_mqtt) and any(old_mqtt.get(k) != mqtt.get(k) for k in BROKER):
            raise ConfigError("publishers.mqtt.password", "the broker changed: enter its password again (a stored "
                              "password is never sent to another broker)")
        secrets.settle(old_mqtt, mqtt, check_mqtt, "password", "password", "publishers.mqtt", "mqtt.password")
    changed = secrets.changed + _changes(current, tables)
    return Edit(tables=tables, check=check, secrets=tuple(secrets.writes), changed=tuple(dict.fromkeys(changed)),
                retired=tuple(secrets.retired))


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], path: str = "") -> list[str]:
    """Dotted names of the settings that differ (secret settings by name only)."""
    found: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        here = f"{path}.{key}" if path else str(key)
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "meters" and isinstance(a, list | None) and isinstance(b, list | None):
            olds = {str(t.get("name")): t for t in a or [] if isinstance(t, Mapping)}
            news = {str(t.get("name")): t for t in b or [] if isinstance(t, Mapping)}
            found += [f"meters.{n} (removed)" for n in olds if n not in news]
            found += [f"meters.{n} (added)" for n in news if n not in olds]
            for n in news:
                if n in olds:
                    found += _changes(olds[n], news[n], f"meters.{n}")
        elif isinstance(a, Mapping | None) and isinstance(b, Mapping | None):
            found += _changes(a or {}, b or {}, here)  # a new or a removed table: its settings
        elif _is_secret_setting(path, str(key)):
            continue  # reported by _apply_secret, by name only
        else:
            found.append(here)
    return found


def _is_secret_setting(path: str, key: str) -> bool:
    names = {n + s for _, n, _ in SECRETS for s in SECRET_SUFFIXES}
    if path.startswith("meters."):
        return key in names and not key.startswith("password")
    return path == "publishers.mqtt" and key.startswith("password")


# --- merging into the user's document ------------------------------------------------


def merge_into(doc: MutableMapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Make tomlkit container ``doc`` (whose plain value is ``old``) hold ``new``, changing
    only what differs: comments and the order of untouched settings stay."""
    for key in [k for k in doc if k not in new or (k == "meters" and new[k] == [])]:
        if key == "meters" and _is_aot(doc[key]):  # no meter left: no "meters = []" either
            for index in reversed(range(len(doc[key]))):
                _keep_comments(doc[key], index, doc)
        del doc[key]
    for key, value in new.items():
        if key == "meters" and value == []:
            continue
        before = old.get(key)
        if key in doc and before == value:
            continue
        current = doc.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping) and isinstance(current, MutableMapping):
            merge_into(current, before, value)
        elif key == "meters" and isinstance(value, list) and isinstance(before, list) and _is_aot(current):
            _merge_tables(current, before, value, doc)
        else:
            doc[key] = value


def _is_aot(item: object) -> bool:
    from tomlkit.items import AoT

    return isinstance(item, AoT)


def _merge_tables(aot: Any, old: list[Any], new: list[Any], doc: Any = None) -> None:
    """[[meters]]: tables matched by name keep their comments; gone ones go, new ones are appended.
    A comment below a removed table belongs to what follows it: it stays (see :func:`_keep_comments`)."""
    names = [str(t.get("name")) if isinstance(t, Mapping) else None for t in new]
    for index in reversed(range(len(old))):
        table = old[index]
        if not isinstance(table, Mapping) or str(table.get("name")) not in names:
            _keep_comments(aot, index, doc)
            del aot[index]
            del old[index]
    by_name = {str(t.get("name")): i for i, t in enumerate(old)}
    for table in new:
        at = by_name.get(str(table.get("name"))) if isinstance(table, Mapping) else None
        if at is None:
            aot.append(table)
        else:
            merge_into(aot[at], old[at], table)


def _keep_comments(aot: Any, index: int, doc: Any) -> None:
    """Before table ``index`` of ``aot`` goes: tomlkit keeps the comment lines below a table in
    that table, though they describe what follows. Move them to the table before it, or in front
    of the table that follows."""
    from tomlkit.items import Comment, Whitespace

    body = aot[index].value.body
    start = len(body)
    while start and body[start - 1][0] is None and isinstance(body[start - 1][1], Comment | Whitespace):
        start -= 1
    trailing = body[start:]
    if not any(isinstance(item, Comment) for _, item in trailing):
        return
    if index > 0:
        aot[index - 1].value.body.extend(trailing)
        return
    text = "".join(item.as_string() for _, item in trailing)
    following = aot[index + 1] if len(aot) > index + 1 else _next_table(doc, aot)
    if following is not None:
        following.trivia.indent = text + following.trivia.indent


def _next_table(doc: Any, aot: Any) -> Any:
    """The first table with a header after ``aot`` in the document (inside a super table), or None."""
    from tomlkit.items import AoT, Table

    if doc is None:
        return None
    items = [item for _, item in doc.body]
    at = next((i for i, item in enumerate(items) if item is aot), None)
    for item in items[at + 1:] if at is not None else []:
        while isinstance(item, Table) and item.is_super_table():
            subs = [v for _, v in item.value.body if isinstance(v, Table | AoT)]
            if not subs:
                break
            item = subs[0]
        if isinstance(item, AoT) and len(item):
            return item[0]
        if isinstance(item, Table):
            return item
    return None
