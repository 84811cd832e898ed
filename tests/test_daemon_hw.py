"""The daemon's local hardware ([local_hardware]) on gpiozero's MockFactory pins and a fake
I2C bus, around a real Gateway and mosquitto: the e-stop button and the site e-stop, the master
valve fed by committed pump events, the status LED, the Pi's own sensors in the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from sensornode import protocol
from sensornode.protocol import decode_estop, encode_estop

from edge_gateway.config_checks import ConfigErrors
from edge_gateway.daemon import Daemon
from edge_gateway.daemon_hw import (
    PUMP_MARGIN_S,
    IrrigationTracker,
    LocalSite,
    real_factories,
)
from edge_gateway.ingest import Gateway
from edge_gateway.localhw import LedCode, parse_local_hardware
from edge_gateway.messages import Event, Reading, Telemetry
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store
from testkit.fake_blinka_i2c import FakeBlinkaI2C, FakeWorld, sht4x_model, virtual_time
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from tests.test_daemon import SITE, WAIT_S, Running, Watcher, site_config, start_daemon, stop_daemon
from tests.test_ingest import FakeNode

ESTOP, LED, VALVE = 17, 27, 22
CLOSE_DELAY_S = 1.0
MAX_RUN_S = 10  # the veg plant's, in tests/test_daemon.py's config
ESTOP_TOPIC = f"nt/{SITE}/estop"
HARDWARE: dict[str, Any] = {
    "poll_interval_s": 1,
    "estop_button": {"pin": ESTOP},
    "status_led": {"pin": LED},
    "master_valve": {"pin": VALVE, "close_delay_s": CLOSE_DELAY_S},
    "sensors": [{"type": "sht4x", "name": "air"}],
}


class Clock:
    """Wall time, plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory(pin_class=MockPWMPin)
    yield pins
    pins.reset()


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    world = FakeWorld({"air_temperature_c": 19.5, "air_humidity_pct": 64.0})
    with virtual_time(world):  # the drivers' sleeps advance the chips' clock
        yield world


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(mosquitto: Mosquitto, tmp_path: Path, factory: MockFactory, world: FakeWorld,
         clock: Clock) -> Iterator[Running]:
    bus = FakeBlinkaI2C({0x44: sht4x_model(world, name="air")}, world)
    running = start_daemon(tmp_path, mosquitto, local_hardware=HARDWARE, pin_factory=factory,
                           i2c_factory=lambda: bus, clock=clock)
    yield running
    stop_daemon(running)


@pytest.fixture
def watch(mosquitto: Mosquitto) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(*filters: str) -> Watcher:
        made.append(Watcher(mosquitto, *filters))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


@pytest.fixture
def bed(mosquitto: Mosquitto) -> Iterator[FakeNode]:
    node = FakeNode(mosquitto, "bed-1")
    node.birth()
    yield node
    node.close()


def local(running: Running) -> LocalSite:
    assert running.daemon.local is not None
    return running.daemon.local


def led_code(running: Running) -> LedCode:
    led = local(running).hardware.led
    assert led is not None
    return led.code


def valve_open(factory: MockFactory) -> bool:
    return bool(factory.pin(VALVE).state)


def pump(node: FakeNode, seq: int, state: str, ts: float | None = None) -> None:
    node.publish(protocol.EVENT, protocol.encode_event(
        seq, time.time() if ts is None else ts, "actuator", "pump", state, "cmd test"))


def stored_events(running: Running, node: str) -> list[tuple[int, str, str]]:
    with Store(running.db) as store:
        return [(e.seq, e.name, e.state) for e in store.events(node=node)]


# ---- e-stop -----------------------------------------------------------------------------------

def retained_estop(watch: Callable[..., Watcher]) -> dict[str, Any]:
    """The site e-stop as a node subscribing now gets it (the retained message)."""
    watcher = watch(ESTOP_TOPIC)
    wait_for(lambda: watcher.latest(ESTOP_TOPIC), WAIT_S, "the retained site e-stop")
    ((payload, retained),) = watcher.messages[ESTOP_TOPIC]
    assert retained
    return decode_estop(payload)


def test_the_estop_button_publishes_the_retained_site_estop_until_reset(
    site: Running, factory: MockFactory, watch: Callable[..., Watcher]
) -> None:
    live = watch(ESTOP_TOPIC)
    before = time.time()
    factory.pin(ESTOP).drive_low()
    wait_for(lambda: live.latest(ESTOP_TOPIC), WAIT_S, "the site e-stop")
    estop = retained_estop(watch)
    assert (estop["latched"], estop["by"]) == (True, "button")
    assert before - 0.001 <= estop["ts"] <= time.time()  # to the ms
    wait_for(lambda: led_code(site) == LedCode.ESTOP, WAIT_S, "the LED's e-stop code")
    factory.pin(ESTOP).drive_high()  # released: the latch holds
    assert local(site).estop_latched
    live.publish(ESTOP_TOPIC, encode_estop(False, "ops", time.time()), retain=True)
    wait_for(lambda: not local(site).estop_latched, WAIT_S, "the e-stop reset")
    wait_for(lambda: led_code(site) == LedCode.OK, WAIT_S, "the LED back to OK")
    assert retained_estop(watch)["latched"] is False


def test_a_reset_while_the_button_is_held_is_answered_with_a_new_estop(
    site: Running, factory: MockFactory, watch: Callable[..., Watcher]
) -> None:
    live = watch(ESTOP_TOPIC)
    factory.pin(ESTOP).drive_low()  # and kept down
    wait_for(lambda: live.latest(ESTOP_TOPIC), WAIT_S, "the site e-stop")
    live.publish(ESTOP_TOPIC, encode_estop(False, "ops", time.time()), retain=True)
    wait_for(lambda: len(live.messages[ESTOP_TOPIC]) >= 3, WAIT_S,
             "the reset answered by a new e-stop")
    states = [(d["latched"], d["by"]) for d in
              (decode_estop(payload) for payload, _ in live.messages[ESTOP_TOPIC])]
    assert states[:3] == [(True, "button"), (False, "ops"), (True, "button")]
    assert local(site).estop_latched
    assert retained_estop(watch)["latched"] is True


def test_an_estop_from_the_cli_shuts_the_valve_while_a_node_pumps(
    site: Running, factory: MockFactory, bed: FakeNode, watch: Callable[..., Watcher]
) -> None:
    pump(bed, 2, "on")
    wait_for(lambda: valve_open(factory), WAIT_S, "the valve to open for bed-1")
    ops = watch(ESTOP_TOPIC)
    ops.publish(ESTOP_TOPIC, encode_estop(True, "ops", time.time(), "hose burst"), retain=True)
    wait_for(lambda: not valve_open(factory), WAIT_S, "the e-stop to shut the valve")
    wait_for(lambda: led_code(site) == LedCode.ESTOP, WAIT_S, "the LED's e-stop code")
    ops.publish(ESTOP_TOPIC, encode_estop(False, "ops", time.time()), retain=True)
    wait_for(lambda: valve_open(factory), WAIT_S, "the valve to open again: bed-1 still pumps")


def test_an_unreadable_site_estop_counts_as_latched(
    site: Running, factory: MockFactory, watch: Callable[..., Watcher]
) -> None:
    watch(ESTOP_TOPIC).publish(ESTOP_TOPIC, b'{"v":1,"latched":"yes"}', retain=True)
    wait_for(lambda: local(site).estop_latched, WAIT_S, "the unreadable e-stop to latch")
    assert not local(site).hardware.estop_latched  # the button itself was not pressed


# ---- master valve -------------------------------------------------------------------------------

def test_the_valve_opens_on_a_pump_on_and_closes_after_off_and_the_delay(
    site: Running, factory: MockFactory, bed: FakeNode
) -> None:
    assert not valve_open(factory)
    pump(bed, 2, "on")
    wait_for(lambda: valve_open(factory), WAIT_S, "the valve to open")
    pump(bed, 3, "off")
    wait_for(lambda: (3, "pump", "off") in stored_events(site, "bed-1"), WAIT_S, "the off event")
    assert valve_open(factory)  # the close delay: the line stays open a moment longer
    wait_for(lambda: not valve_open(factory), WAIT_S, "the valve to close")
    states = factory.pin(VALVE).states
    assert [s.state for s in states] == [False, True, False]
    assert states[-1].timestamp >= CLOSE_DELAY_S  # open at least the delay after the off


def test_a_pump_on_whose_off_never_comes_counts_until_max_run_plus_margin(
    site: Running, factory: MockFactory, bed: FakeNode
) -> None:
    # switched on so long ago that the node's own timer stops it within half a second
    pump(bed, 2, "on", ts=time.time() - MAX_RUN_S - PUMP_MARGIN_S + 0.5)
    wait_for(lambda: valve_open(factory), WAIT_S, "the valve to open")
    wait_for(lambda: not valve_open(factory), WAIT_S, "the valve to close without an off")


# ---- status LED --------------------------------------------------------------------------------

def test_the_led_follows_broker_node_faults_and_staleness(
    site: Running, factory: MockFactory, bed: FakeNode, mosquitto: Mosquitto, clock: Clock
) -> None:
    wait_for(lambda: led_code(site) == LedCode.OK, WAIT_S, "the LED at OK")
    assert factory.pin(LED).state  # steady on
    bed.publish(protocol.EVENT, protocol.encode_event(2, time.time(), "fault", "soil", "failed",
                                                      "probe missing"))
    wait_for(lambda: led_code(site) == LedCode.NODE_TROUBLE, WAIT_S, "the node-trouble code")
    bed.publish(protocol.EVENT, protocol.encode_event(3, time.time(), "fault", "soil", "ok"))
    wait_for(lambda: led_code(site) == LedCode.OK, WAIT_S, "OK once the fault cleared")
    clock.offset = 301.0  # nothing from bed-1 for longer than its stale_after_s (300)
    wait_for(lambda: led_code(site) == LedCode.NODE_TROUBLE, WAIT_S, "the stale node's code")
    clock.offset = 0.0
    wait_for(lambda: led_code(site) == LedCode.OK, WAIT_S, "OK again")
    mosquitto.stop()
    wait_for(lambda: led_code(site) == LedCode.BROKER_DOWN, WAIT_S, "the broker-down code")
    mosquitto.start()
    wait_for(lambda: led_code(site) == LedCode.OK, 2 * WAIT_S, "OK once reconnected")


# ---- local sensors ---------------------------------------------------------------------------

def test_local_sensors_become_readings_and_faults_of_the_gateway_node(
    mosquitto: Mosquitto, tmp_path: Path, factory: MockFactory, world: FakeWorld
) -> None:
    with Store(tmp_path / "gw.db") as store:  # an earlier run of the gateway got to seq 41
        store.write([Telemetry(SITE, "gateway", (Reading("gateway", 41, 1.79e9, "air_humidity",
                                                         50.0, 1.79e9),), 1.79e9)])
    bus = FakeBlinkaI2C({0x44: sht4x_model(world, name="air")}, world)
    running = start_daemon(tmp_path, mosquitto, local_hardware=HARDWARE, pin_factory=factory,
                           i2c_factory=lambda: bus)
    try:
        def readings() -> list[Reading]:
            with Store(running.db) as store:
                return store.readings(node="gateway", quantity="air_temperature")

        wait_for(readings, WAIT_S, "the gateway's own air temperature")
        first = readings()[0]
        assert first.seq == 42 and first.value == pytest.approx(19.5, abs=0.1)
        world.inject("air", "absent")
        wait_for(lambda: [e for e in stored_events(running, "gateway") if e[2] == "failed"],
                 WAIT_S, "the sensor's fault event")
        world.inject("air", None)
        wait_for(lambda: [e for e in stored_events(running, "gateway") if e[2] == "ok"],
                 WAIT_S, "the sensor back")
        seqs = [seq for seq, *_ in stored_events(running, "gateway")]
        taken = {r.seq for r in readings()} | set(seqs)
        assert sorted(taken) == list(range(42, 42 + len(taken)))  # one seq each, in order
    finally:
        stop_daemon(running)


# ---- starting up -------------------------------------------------------------------------------

def test_without_a_pi_the_real_factories_fail_with_a_clear_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    config = site_config(tmp_path, mosquitto, keys, {"status_led": {"pin": LED}})
    gateway = Gateway(SITE, mosquitto.host, mosquitto.port, config.storage.path)
    with pytest.raises(ConfigErrors) as raised:
        Daemon(config, gateway, keys)
    assert "local_hardware: needs a Raspberry Pi's GPIO, but this is" in str(raised.value)
    assert "remove the [local_hardware] section" in str(raised.value)
    hw = parse_local_hardware(HARDWARE)
    with pytest.raises(ConfigErrors, match="Raspberry Pi's GPIO and I2C, but this is a PC"):
        real_factories(hw, None, None, model=lambda: "a PC")


def test_the_gateway_node_name_must_not_be_a_configured_node(
    mosquitto: Mosquitto, tmp_path: Path, factory: MockFactory
) -> None:
    keys = KeyRing(tmp_path / "keys")
    config = site_config(tmp_path, mosquitto, keys, {"node": "bed-1"})
    gateway = Gateway(SITE, mosquitto.host, mosquitto.port, config.storage.path)
    with pytest.raises(ConfigErrors, match=r"local_hardware\.node: 'bed-1' is also a node"):
        Daemon(config, gateway, keys, pin_factory=factory)


# ---- pure parts ------------------------------------------------------------------------------

def event(seq: int, state: str, ts: float = 1000.0, node: str = "bed-1",
          kind: str = "actuator", name: str = "pump") -> Event:
    return Event(SITE, node, seq, ts, kind, name, state, "", ts)


def test_irrigation_tracker_orders_by_seq_and_bounds_each_run() -> None:
    tracker = IrrigationTracker({"bed-1": 10.0}, default_max_run_s=100.0, margin_s=5.0)
    assert tracker.observe([event(2, "on")])
    assert tracker.irrigating(1015.0) == {"bed-1"}
    assert tracker.irrigating(1015.1) == frozenset()  # 10 s max run + 5 s margin
    assert not tracker.observe([event(1, "off")])  # redelivered late: older than the "on"
    assert not tracker.observe([event(3, "refused")])  # the pump did not change
    assert tracker.irrigating(1001.0) == {"bed-1"}
    tracker.observe([event(4, "stopped", name="pump"), event(5, "on", node="bed-2")])
    assert tracker.irrigating(1001.0) == {"bed-2"}
    assert tracker.irrigating(1105.0) == {"bed-2"}  # unknown plant: the default limit
    tracker.observe([event(6, "boot", node="bed-2", kind="boot", name="boot")])
    assert tracker.irrigating(1001.0) == frozenset()  # pumps start off at boot
