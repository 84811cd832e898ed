"""Time sync: the site time message, the node's Clock (injected monotonic clock) and the
gateway's TimeBroadcaster against a real mosquitto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensornode import compat, protocol, timesync
from sensornode.timesync import Clock

from edge_gateway.timesync import MIN_GAP_S, TimeBroadcaster
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

T0_MS = 1_795_300_000_000
COLD_RTC = 86_400.0  # a cold-booted ESP32: one day after its 2000 epoch, not plausible
WAIT_S = 10.0


class FakeMonotonic:
    def __init__(self, ms: int = 5_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def cold_clock(mono: FakeMonotonic, **kwargs: object) -> Clock:
    return Clock(monotonic=mono, rtc=lambda: COLD_RTC, **kwargs)


# ---- protocol ---------------------------------------------------------------------------------


def test_site_topics() -> None:
    assert protocol.site_topic("home", protocol.TIME) == "nt/home/time"
    assert protocol.site_topic("home", protocol.ESTOP) == "nt/home/estop"
    with pytest.raises(protocol.ProtocolError, match="site topic kind: 'status'"):
        protocol.site_topic("home", "status")
    with pytest.raises(protocol.ProtocolError, match="site: "):
        protocol.site_topic("My Site", protocol.TIME)


def test_time_round_trip_to_the_millisecond() -> None:
    payload = protocol.encode_time(1_795_300_000.1234, 60)
    assert json.loads(payload) == {"v": 1, "ts": 1_795_300_000.123, "interval_s": 60}
    assert protocol.decode_time(payload) == {
        "ts": 1_795_300_000.123, "ts_ms": 1_795_300_000_123, "interval_s": 60.0
    }


@pytest.mark.parametrize(("text", "ms"), [
    ('{"v":1,"ts":1795300000.9996,"interval_s":1}', 1_795_300_001_000),  # rounds like floats
    ('{"v":1,"ts":1795300000.5e0,"interval_s":1}', 1_795_300_000_500),  # exponent: float path
    ('{"v":1,"ts": 1795300000 ,"interval_s":1}', 1_795_300_000_000),
    # "ts" inside a text does not fool it: the digits must agree with the decoded number
    ('{"v":1,"note":"\\"ts\\":1","ts":1795300000.25,"interval_s":1}', 1_795_300_000_250),
    ('{"v":1,"interval_s":1,"x":{"ts":1000000001},"ts":1795300000.25}', 1_795_300_000_250),
])
def test_time_ms_come_from_the_digits(text: str, ms: int) -> None:
    assert protocol.decode_time(text)["ts_ms"] == ms


# ---- the node's clock -------------------------------------------------------------------------


def test_unsynced_cold_board_has_no_time() -> None:
    clock = cold_clock(FakeMonotonic())
    assert not clock.synced
    assert clock.now() is None and clock.now_ms() is None


def test_offset_is_learned_from_a_time_message() -> None:
    mono = FakeMonotonic(5_000)
    clock = cold_clock(mono)
    clock.handle(protocol.encode_time(T0_MS / 1000, 60))
    assert clock.synced and clock.interval_s == 60.0
    assert clock.offset_ms == T0_MS - 5_000
    mono.ms += 1_500
    assert clock.now_ms() == T0_MS + 1_500
    assert clock.now() == (T0_MS + 1_500) / 1000


def test_least_delayed_message_of_the_window_wins() -> None:
    mono = FakeMonotonic(0)
    clock = cold_clock(mono, window=3)
    # gateway time of sending, transit delay in ms
    for sent_ms, delay in [(T0_MS, 40), (T0_MS + 10_000, 3), (T0_MS + 20_000, 250)]:
        clock.update(sent_ms, 10, received_ms=sent_ms - T0_MS + delay)
    assert clock.offset_ms == T0_MS - 3  # the 3 ms message: off by its transit only
    # Two more messages push the 3 ms one out of the window of 3; the best left is 40 ms...
    clock.update(T0_MS + 30_000, 10, received_ms=30_000 + 40)
    clock.update(T0_MS + 40_000, 10, received_ms=40_000 + 90)
    assert clock.offset_ms == T0_MS - 40
    # ...and a gateway clock stepped forwards counts at once.
    clock.update(T0_MS + 60_000, 10, received_ms=50_000 + 5)
    assert clock.offset_ms == T0_MS + 10_000 - 5


def test_plausible_rtc_stands_in_until_synced() -> None:
    mono = FakeMonotonic(1_000)
    rtc = [1_795_300_100.5]
    clock = Clock(monotonic=mono, rtc=lambda: rtc[0])
    assert not clock.synced
    assert clock.now() == 1_795_300_100.5
    assert clock.stamp() == 1_795_300_100.5
    clock.update(T0_MS, 60)  # the gateway's time wins over the RTC's once known
    assert clock.synced and clock.now() == T0_MS / 1000


def test_readings_before_sync_get_their_time_after_it() -> None:
    mono = FakeMonotonic(2_000)
    clock = cold_clock(mono, boot=128)
    early = clock.stamp()
    assert clock.pending(early) and early == (128, 2_000)
    assert clock.resolve(early) is None
    mono.ms = 62_000
    clock.update(T0_MS, 60)  # a minute after the reading
    assert clock.resolve(early) == (T0_MS - 60_000) / 1000
    # a stamp that went through the outbox as JSON still resolves
    assert clock.resolve(json.loads(json.dumps(early))) == (T0_MS - 60_000) / 1000
    late = clock.stamp()
    assert not clock.pending(late) and clock.resolve(late) == late == T0_MS / 1000


def test_stamp_of_an_earlier_boot_resolves_only_if_that_boot_synced(tmp_path: Path) -> None:
    path = str(tmp_path / "clock.json")
    mono = FakeMonotonic(1_000)
    first = cold_clock(mono, boot=0, path=path)
    before_sync = first.stamp()
    mono.ms = 11_000
    first.update(T0_MS, 60)
    # reboot: monotonic ms start again; the outbox still holds the pending stamp
    mono.ms = 500
    second = cold_clock(mono, boot=64, path=path)
    assert second.resolve(list(before_sync)) == (T0_MS - 10_000) / 1000
    never_synced = second.stamp()
    third = cold_clock(mono, boot=128, path=path)
    assert third.resolve(never_synced) is None  # boot 64 ended before any time message


def test_clock_file_keeps_the_last_boots_and_survives_damage(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    mono = FakeMonotonic(0)
    for boot in range(0, 64 * 6, 64):
        cold_clock(mono, boot=boot, path=str(path)).update(T0_MS + boot, 60)
    assert sorted(int(b) for b in json.loads(path.read_text())) == [128, 192, 256, 320]
    path.write_text("{not json")
    clock = cold_clock(mono, boot=999, path=str(path))
    assert clock.resolve((320, 0)) is None


def test_rtc_is_set_from_the_gateway_time_when_it_is_off() -> None:
    mono = FakeMonotonic(0)
    set_to: list[float] = []
    clock = Clock(monotonic=mono, rtc=lambda: COLD_RTC, set_rtc=set_to.append)
    clock.update(T0_MS, 60)
    assert set_to == [T0_MS / 1000]
    right = Clock(monotonic=mono, rtc=lambda: T0_MS / 1000 + 0.2, set_rtc=set_to.append)
    right.update(T0_MS, 60)
    assert set_to == [T0_MS / 1000]  # within a second: left alone


def test_single_precision_ports_get_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timesync, "_DOUBLE", False)
    mono = FakeMonotonic(0)
    clock = cold_clock(mono)
    clock.update(T0_MS + 999, 60)
    assert clock.now() == T0_MS // 1000 and isinstance(clock.now(), int)


def test_clock_keeps_counting_across_a_ticks_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # compat.monotonic_ms accumulates ticks_ms (2**30 period on an MCU and in this shim).
    ticks = [(1 << 30) - 3_000]
    monkeypatch.setattr(compat, "ticks_ms", lambda: ticks[0])
    monkeypatch.setattr(compat._Monotonic, "_last", ticks[0])
    monkeypatch.setattr(compat._Monotonic, "_total", 0)
    clock = Clock(rtc=lambda: COLD_RTC)  # the default monotonic clock
    clock.update(T0_MS, 60)
    for _ in range(3):  # read at least once per half period, as the app's loop does
        ticks[0] = (ticks[0] + 2_000) & ((1 << 30) - 1)
        clock.now_ms()
    assert ticks[0] < 5_000  # wrapped
    assert clock.now_ms() == T0_MS + 6_000


def test_bad_time_message_is_refused_and_changes_nothing() -> None:
    clock = cold_clock(FakeMonotonic())
    with pytest.raises(protocol.ProtocolError, match=r"time\.ts"):
        clock.handle(b'{"v":1,"ts":86400,"interval_s":60}')
    assert not clock.synced


# ---- the gateway's broadcaster ----------------------------------------------------------------


class TimeListener:
    def __init__(self, broker: Mosquitto, site: str = "home") -> None:
        self.messages: list[tuple[float, dict[str, float], bool]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="time-listener",
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(
            protocol.site_topic(site, protocol.TIME), qos=0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((time.time(), protocol.decode_time(msg.payload), msg.retain))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-time",
                         protocol=mqtt.MQTTv311)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[TimeListener]:
    listening = TimeListener(mosquitto)
    yield listening
    listening.close()


def test_broadcaster_sends_at_once_then_every_interval(
    publisher: mqtt.Client, listener: TimeListener
) -> None:
    broadcaster = TimeBroadcaster(publisher, "home", interval_s=0.3)
    started = time.time()
    broadcaster.start()
    try:
        wait_for(lambda: listener.count() >= 4, WAIT_S, "4 time messages")
    finally:
        broadcaster.stop()
    arrived = [at for at, _, _ in listener.messages]
    assert arrived[0] - started < 0.25  # the first one at once
    gaps = [b - a for a, b in pairwise(arrived)]
    assert all(0.2 < gap < 1.5 for gap in gaps), gaps
    for at, msg, retained in listener.messages:
        assert not retained and msg["interval_s"] == 0.3
        assert abs(msg["ts"] - at) < 0.5


def test_poke_sends_soon_and_coalesces(publisher: mqtt.Client, listener: TimeListener) -> None:
    broadcaster = TimeBroadcaster(publisher, "home", interval_s=3600)
    broadcaster.start()
    try:
        wait_for(lambda: listener.count() == 1, WAIT_S, "the first time message")
        time.sleep(MIN_GAP_S)
        poked = time.time()
        for _ in range(20):  # a fleet coming online at once
            broadcaster.poke()
        wait_for(lambda: listener.count() == 2, WAIT_S, "the time after the pokes")
        assert listener.messages[1][0] - poked < 1.0
        time.sleep(3 * MIN_GAP_S)
        assert listener.count() == 2  # one message for all twenty
    finally:
        broadcaster.stop()
    assert not broadcaster.running


def test_time_is_never_retained(mosquitto: Mosquitto, publisher: mqtt.Client) -> None:
    broadcaster = TimeBroadcaster(publisher, "home", interval_s=3600)
    assert broadcaster.publish()
    late = TimeListener(mosquitto)  # subscribes after the message: must not get it
    try:
        # A retained copy would be delivered on subscribe, before anything published later.
        assert broadcaster.publish()
        wait_for(lambda: late.count() >= 1, WAIT_S, "the message published after subscribing")
        with late.lock:
            first = late.messages[0]
        assert not first[2] and late.count() == 1
    finally:
        late.close()


def test_publish_without_a_connection_is_skipped() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="never-connected")
    broadcaster = TimeBroadcaster(client, "home", interval_s=60)
    assert broadcaster.publish() is False and broadcaster.sent == 0


@pytest.mark.parametrize("interval", [0, -1, 86_401])
def test_interval_must_fit_the_protocol(interval: float) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    with pytest.raises(ValueError, match="interval_s"):
        TimeBroadcaster(client, "home", interval_s=interval)
