"""Protocol vectors (shared with the micropython run in hil_tests) and encode/decode round trips."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sensornode import protocol

from tests.vectors import check_vectors

VECTORS_PATH = Path(__file__).parent / "vectors" / "protocol.json"
VECTORS: dict[str, list[dict[str, Any]]] = json.loads(VECTORS_PATH.read_text())


@pytest.mark.parametrize("vector", VECTORS["payloads"], ids=lambda v: v["name"])
def test_payload_vector(vector: dict[str, Any]) -> None:
    assert check_vectors.check_payload(vector) is None


@pytest.mark.parametrize("vector", VECTORS["topics"], ids=lambda v: v["topic"])
def test_topic_vector(vector: dict[str, Any]) -> None:
    assert check_vectors.check_topic(vector) is None


def test_vectors_cover_every_payload_kind_both_ways() -> None:
    kinds_ok = {v["kind"] for v in VECTORS["payloads"] if v["ok"]}
    kinds_bad = {v["kind"] for v in VECTORS["payloads"] if not v["ok"]}
    assert kinds_ok == kinds_bad == set(check_vectors.DECODERS)


def test_node_topic_round_trip() -> None:
    topic = protocol.node_topic("home", "bed-1", protocol.TELEMETRY)
    assert topic == "nt/home/bed-1/telemetry"
    assert protocol.parse_topic(topic) == ("home", "bed-1", "telemetry")
    assert protocol.site_filter("home", protocol.STATUS) == "nt/home/+/status"


@pytest.mark.parametrize("bad", ["", "Bed", "a/b", "x" * 33, "bed 1", "+", "#"])
def test_bad_names_refused_with_field(bad: str) -> None:
    with pytest.raises(protocol.ProtocolError, match="node: "):
        protocol.node_topic("home", bad, protocol.STATUS)


entries = st.lists(
    st.fixed_dictionaries(
        {
            "seq": st.integers(0, 2**53),
            "ts": st.floats(1e9, 9e9),
            "values": st.dictionaries(
                st.sampled_from(sorted(protocol.QUANTITIES)),
                st.floats(-1e6, 1e6, allow_nan=False),
                min_size=1,
            ),
        }
    ),
    min_size=1,
    max_size=20,
)


@given(entries)
def test_telemetry_round_trip(batch: list[dict[str, Any]]) -> None:
    assert protocol.decode_telemetry(protocol.encode_telemetry(batch)) == batch


@given(st.binary(max_size=200))
def test_decoders_never_raise_anything_but_protocol_error(blob: bytes) -> None:
    for decoder in check_vectors.DECODERS.values():
        with contextlib.suppress(protocol.ProtocolError):
            decoder(blob)


def test_status_birth_and_will() -> None:
    birth = protocol.decode_status(
        protocol.encode_status(True, "garden", "0.1.0", "emulated", 5, 64, 1795300000.0)
    )
    assert birth["online"] is True and birth["seq_next"] == 64
    assert protocol.decode_status(protocol.encode_status(False)) == {"online": False}


def test_every_documented_quantity_is_in_protocol_md() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    for name, unit in protocol.QUANTITIES.items():
        assert f"`{name}`" in doc and unit in doc, (
            f"docs/protocol.md does not document {name} ({unit})"
        )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[" * 100_000, "telemetry: not JSON"),
        (b'{"v":1,"batch":[{"seq":1,"ts":1795300000,"values":{"pump":NaN}}]}', "finite number"),
        (
            b'{"v":1,"batch":[{"seq":1,"ts":1795300000,"values":{"pump":Infinity}}]}',
            "finite number",
        ),
        (
            b'{"v":1,"batch":[{"seq":1,"ts":1795300000,"values":{"pump":1' + b"0" * 400 + b"}}]}",
            "finite number",
        ),
    ],
)
def test_hostile_numbers_and_nesting_are_protocol_errors(payload: bytes, message: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_telemetry(payload)
