"""Shared fixtures: the real-capture corpus in ../shared/corpus (never copied here), and a
short private run directory for tests that start processes (tests/support.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import cleanup, short_dir

_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "vectors.json"


def corpus_path() -> Path:
    env = os.environ.get("METERPIPE_CORPUS")
    if env:
        p = Path(env)
        return p / "vectors.json" if p.is_dir() else p
    return _DEFAULT


def load_corpus() -> list[dict[str, Any]]:
    path = corpus_path()
    if not path.exists():
        return []
    return list(json.loads(path.read_text()))


CORPUS = load_corpus()
DLMS_TRANSPORTS = ("hdlc", "mbus", "apdu")
DLMS_VECTORS = [v for v in CORPUS if v["transport"] in DLMS_TRANSPORTS]

needs_corpus = pytest.mark.skipif(
    not CORPUS, reason=f"real-capture corpus not found at {corpus_path()} (set METERPIPE_CORPUS)"
)


def vector(vector_id: str) -> dict[str, Any]:
    for v in CORPUS:
        if v["id"] == vector_id:
            return v
    pytest.skip(f"corpus vector {vector_id} not present in {corpus_path()}")


def model_hint(v: dict[str, Any]) -> str | None:
    """The model a user would put in the config for this capture's meter."""
    meter = v["meter"].lower()
    for needle, model in (("e450", "e450"), ("e570", "e570"), ("e360", "e360"), ("am550", "am550"), ("omnipower", "omnipower")):
        if needle in meter:
            return model
    return None


def keys(v: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    key = bytes.fromhex(v["key"]) if v.get("key") else None
    auth = bytes.fromhex(v["auth_key"]) if v.get("auth_key") else None
    return key, auth


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A short private directory (ipc:// paths fit), removed after the test unless
    METERPIPE_KEEP_TEST_DIRS is set."""
    path = short_dir()
    yield path
    cleanup(path)
