"""Fuzzing the ingest path (hypothesis): malformed payloads on every topic the gateway subscribes
to, through a real mosquitto into a running Gateway, interleaved with valid telemetry.

The judge of "malformed" is the protocol (sensornode.protocol's decoders, plus text SQLite
cannot store); generated cases the protocol accepts are filtered out. Then: nothing escapes
(paho's thread and the writer keep running, nothing is logged at ERROR), every malformed
delivery is a dead letter with its topic, raw bytes and a reason, and every valid reading sent
among them is stored. A second test checks that the gateway's fast telemetry decoder never
disagrees with the protocol's.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from sensornode import protocol

from edge_gateway.decoding import _fast_telemetry
from edge_gateway.ingest import Gateway
from edge_gateway.store import Store
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

SITE = "home"
GOOD_NODE = "good-1"
T0 = 1_790_000_000.0
WAIT_S = 20.0
KINDS = (protocol.TELEMETRY, protocol.STATUS, protocol.EVENT, protocol.ACK)
DECODERS = {
    protocol.TELEMETRY: protocol.decode_telemetry,
    protocol.STATUS: protocol.decode_status,
    protocol.EVENT: protocol.decode_event,
    protocol.ACK: protocol.decode_ack,
}
TEMPLATES: dict[str, dict[str, Any]] = {
    protocol.TELEMETRY: {"v": 1, "batch": [
        {"seq": 7, "ts": T0, "values": {"soil_moisture": 41.5, "pump": 0}}]},
    protocol.STATUS: {"v": 1, "online": True, "role": "garden", "fw": "0.1.0", "board": "b",
                      "uptime_s": 3, "seq_next": 10, "ts": T0},
    protocol.EVENT: {"v": 1, "seq": 3, "ts": T0, "kind": "fault", "name": "soil",
                     "state": "missing", "detail": ""},
    protocol.ACK: {"v": 1, "id": "c0ffee", "ok": True, "result": "done", "ts": T0},
}
# Topics the gateway's subscription matches but whose node name the protocol refuses.
BAD_NODES = ("Bed-1", "bed 1", "x" * 33, "bédé", "a.b", "node\u2028")
NEAR_MISS_QUANTITIES = ("soil_temperature_0", "soil_temperature_9", "tank_ok_01", "pump_1",
                        "Pump", "soil_moisture ", "", "diffuser_duty_", "voc")

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["\ud800", "1790000000", "garden", "done", "\x00"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """The kind's valid payload with a field removed, replaced or added, at any depth."""
    obj: Any = json.loads(json.dumps(TEMPLATES[kind]))
    target = obj
    if kind == protocol.TELEMETRY and draw(st.booleans()):
        target = obj["batch"][0]
        if draw(st.booleans()):
            target = target["values"]
    key = draw(st.sampled_from([*target, "extra", *NEAR_MISS_QUANTITIES]))
    action = draw(st.sampled_from(["delete", "replace", "replace"]))
    if action == "delete":
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    return json.dumps(obj, allow_nan=True).encode()


@st.composite
def unstorable_text(draw: st.DrawFn, kind: str) -> bytes:
    """A text field holding a lone surrogate: valid JSON, valid to the protocol's decoders, but
    not text SQLite can store."""
    obj: Any = json.loads(json.dumps(TEMPLATES[kind]))
    key = draw(st.sampled_from([k for k, v in obj.items() if isinstance(v, str)] or ["v"]))
    obj[key] = draw(st.sampled_from(["\ud800", "ok\udfff", "\udc80x"]))
    return json.dumps(obj).encode()


@st.composite
def malformed_case(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(KINDS))
    node = draw(st.sampled_from(["fuzz-1", "fuzz-2"]) | st.sampled_from(BAD_NODES))
    valid = protocol.dump(json.loads(json.dumps(TEMPLATES[kind])))
    payload = draw(st.one_of(
        mutated(kind),
        unstorable_text(kind),
        st.binary(max_size=40),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated
        st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.just(valid.replace(b'"v":1', b'"v":2')),
        st.just(b"\xff" + valid),
        json_values.map(lambda value: json.dumps(value, allow_nan=True).encode()),
    ))
    return f"nt/{SITE}/{node}/{kind}", payload


def refused(topic: str, payload: bytes) -> bool:
    """Whether the gateway must refuse this delivery, by the protocol's decoders."""
    node, kind = topic.split("/")[2:]
    if not protocol.valid_name(node):
        return True
    try:
        decoded = DECODERS[kind](payload)
    except Exception:  # ProtocolError; any other exception is a refusal too
        return True
    texts = [v for v in decoded.values() if isinstance(v, str)] if kind != "telemetry" else []
    try:
        for text in texts:
            text.encode()
    except UnicodeEncodeError:  # a lone surrogate: SQLite cannot store it
        return True
    return False


class Publisher:
    def __init__(self, broker: Mosquitto) -> None:
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer",
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S)

    def publish_all(self, deliveries: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in deliveries]
        for info in infos:
            info.wait_for_publish(WAIT_S)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def running(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[tuple[Gateway, Publisher, Store]]:
    gateway = Gateway(SITE, mosquitto.host, mosquitto.port, tmp_path / "gw.db")
    gateway.start()
    publisher = Publisher(mosquitto)
    try:
        gateway.wait_connected(WAIT_S)
        with Store(tmp_path / "gw.db") as reader:
            yield gateway, publisher, reader
    finally:
        publisher.close()
        gateway.stop()


class Progress:
    """What the examples before this one sent (the gateway and its store live across them)."""

    def __init__(self) -> None:
        self.messages = 0
        self.good_seqs: list[int] = []
        self.letters: Counter[tuple[str, bytes]] = Counter()


# No shrinking: every example goes through the broker, and a failure's assertion already lists
# the deliveries that went wrong.
@settings(max_examples=10, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(cases=st.lists(malformed_case().filter(lambda case: refused(*case)), min_size=250,
                      max_size=400))
def test_malformed_payloads_become_dead_letters_and_valid_readings_around_them_are_kept(
    running: tuple[Gateway, Publisher, Store], caplog: pytest.LogCaptureFixture,
    cases: list[tuple[str, bytes]],
) -> None:
    gateway, publisher, store = running
    caplog.set_level(logging.ERROR)
    progress: Progress = getattr(gateway, "_fuzz_progress", None) or Progress()
    setattr(gateway, "_fuzz_progress", progress)  # noqa: B010 - shared across examples

    deliveries: list[tuple[str, bytes]] = []
    for i, case in enumerate(cases):
        if i % 5 == 0:  # valid telemetry between the malformed ones
            seq = len(progress.good_seqs) + 1
            progress.good_seqs.append(seq)
            deliveries.append((f"nt/{SITE}/{GOOD_NODE}/telemetry", protocol.encode_telemetry(
                [{"seq": seq, "ts": T0 + seq, "values": {"soil_moisture": seq / 10}}])))
        deliveries.append(case)
    publisher.publish_all(deliveries)
    progress.messages += len(deliveries)
    progress.letters.update(cases)
    wait_for(lambda: gateway.stats.messages >= progress.messages, WAIT_S,
             lambda: f"{progress.messages} messages stored (stats {gateway.stats})")

    assert gateway.stats.messages == progress.messages
    letters = store.dead_letters()
    assert Counter((letter.topic, letter.payload) for letter in letters) == progress.letters
    assert all(letter.reason.strip() for letter in letters)
    assert not [r for r in letters if r.reason.startswith(("undecodable", "could not be"))]
    stored = store.readings(node=GOOD_NODE)
    assert [(r.seq, r.value) for r in stored] == [(s, s / 10) for s in progress.good_seqs]
    assert store.readings(node="fuzz-1") == store.readings(node="fuzz-2") == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    gateway.wait_connected(0.1)  # paho's thread is still up and subscribed


# ---- the fast telemetry decoder against the protocol's ----------------------------------------

entries = st.fixed_dictionaries(
    {"seq": st.integers(-2, 2**53 + 2) | json_values,
     "ts": st.floats(9e8, 1.1e10) | st.integers(0, 2**40) | json_values,
     "values": st.dictionaries(st.sampled_from([*protocol.QUANTITIES, *NEAR_MISS_QUANTITIES,
                                                "soil_temperature_3", "tank_ok_8"]),
                               st.floats(allow_nan=True) | st.integers(-2**1100, 2**1100)
                               | st.booleans() | json_values, max_size=4)},
    optional={"extra": json_values},
)
telemetry_objects = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1.0, True, 2, "1"]), "batch": st.lists(entries, max_size=3)},
)


@settings(max_examples=3000, deadline=None, database=None)
@given(obj=telemetry_objects)
def test_fast_telemetry_decoder_agrees_with_the_protocol(obj: dict[str, Any]) -> None:
    try:
        payload = json.dumps(obj, allow_nan=True).encode()
    except (OverflowError, ValueError):
        return
    fast = _fast_telemetry("bed-1", payload, T0)
    try:
        entries = protocol.decode_telemetry(payload)
    except protocol.ProtocolError:
        assert fast is None  # never accepts what the protocol refuses
        return
    expected = [(e["seq"], e["ts"], q, v) for e in entries for q, v in e["values"].items()]
    if fast is not None:
        assert [(r.seq, r.ts, r.quantity, r.value) for r in fast] == expected
        assert all(type(r.value) is float and math.isfinite(r.value) for r in fast)


def test_fast_telemetry_decoder_takes_the_usual_shape() -> None:
    # The agreement test above passes trivially if the fast path declines everything.
    payload = protocol.encode_telemetry([
        {"seq": 7, "ts": T0, "values": {"soil_moisture": 41.5, "pump": 0}},
        {"seq": 8, "ts": int(T0) + 1, "values": {"soil_temperature_2": -3}},
    ])
    fast = _fast_telemetry("bed-1", payload, T0 + 5)
    assert fast is not None
    assert [(r.node, r.seq, r.ts, r.quantity, r.value, r.received_at) for r in fast] == [
        ("bed-1", 7, T0, "soil_moisture", 41.5, T0 + 5), ("bed-1", 7, T0, "pump", 0.0, T0 + 5),
        ("bed-1", 8, T0 + 1, "soil_temperature_2", -3.0, T0 + 5)]
    assert all(type(r.ts) is float and type(r.value) is float for r in fast)


@pytest.mark.parametrize("payload", [
    # msgspec skips unknown fields without looking at them; the protocol refuses the payload.
    b'{"v": 1, "note": "\xff", "batch": [{"seq": 1, "ts": 1790000000, "values": {"pump": 1}}]}',
    b'{"v": true, "batch": [{"seq": 1, "ts": 1790000000, "values": {"pump": 1}}]}',
    b'{"v": 1, "batch": [{"seq": 1, "ts": 1790000000, "values": {"pump": true}}]}',
    b'{"v": 1, "batch": [{"seq": 1, "ts": 1790000000, "values": {"pump": NaN}}]}',
    b'{"v": 1, "batch": [{"seq": 1, "ts": 1790000000, "values": {"pump_1": 1}}]}',
    b'{"v": 1, "batch": [{"seq": 1, "ts": 1790000000, "values": {}}]}',
    b'{"v": 1, "batch": []}',
])
def test_fast_telemetry_decoder_declines_what_it_does_not_vouch_for(payload: bytes) -> None:
    assert _fast_telemetry("bed-1", payload, T0) is None
