"""Component lifecycle: a fake sensor that fails, recovers and gets stuck; exactly one fault event
per break and one per recovery; backoff bounded; per-quantity filters; config errors; the loop;
and real drivers on the emulated board."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import emu
import machine
import pytest
from sensornode.component import Component, check_config, describe, run_all
from sensornode.drivers.errors import CRCError, NotReady, SensorError
from sensornode.drivers.mq135 import MQ135
from sensornode.filters import FilterConfigError

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401


class FakeSensor:
    """Returns the next scripted item: a dict is a reading, an exception is raised."""

    def __init__(self, script: list[Any] | None = None, value: float = 20.0) -> None:
        self.script = list(script or [])
        self.value = value
        self.reads = 0
        self.setups = 0
        self.setup_error: BaseException | None = None

    async def setup(self) -> None:
        self.setups += 1
        if self.setup_error is not None:
            raise self.setup_error

    async def read(self) -> dict[str, float]:
        self.reads += 1
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return dict(item)
        self.value += 0.5  # a live sensor: never quite the same
        return {"air_temperature": self.value}


class Events:
    def __init__(self) -> None:
        self.faults: list[tuple[str, str, str]] = []
        self.reports: list[tuple[str, dict[str, float]]] = []

    def on_fault(self, name: str, state: str, detail: str) -> None:
        self.faults.append((name, state, detail))

    def on_report(self, name: str, values: dict[str, float]) -> None:
        self.reports.append((name, values))


ENODEV = OSError(errno.ENODEV, "ENODEV")


def make(sensor: Any, **kwargs: Any) -> tuple[Component, Events, FakeClock]:
    clock = FakeClock(0)
    events = Events()
    args: dict[str, Any] = {"interval_s": 10, "on_fault": events.on_fault,
                            "on_report": events.on_report, "clock": clock}
    args.update(kwargs)
    return Component("sht4x", sensor, **args), events, clock


def cycle(comp: Component, clock: FakeClock, n: int = 1) -> list[dict[str, float]]:
    """n updates, each at the moment the component is next due."""
    out = []
    for _ in range(n):
        clock.ms += comp.ms_until_due(clock.ms)
        out.append(asyncio.run(comp.run_once(clock.ms)))
    return out


# ---- states and events ----------------------------------------------------------------------


def test_healthy_sensor_sets_up_once_and_reports() -> None:
    sensor = FakeSensor()
    comp, events, clock = make(sensor)
    assert comp.state == "setup"
    assert cycle(comp, clock) == [{"air_temperature": 20.5}]
    assert comp.state == "ok" and sensor.setups == 1
    cycle(comp, clock, 3)
    assert sensor.setups == 1 and sensor.reads == 4
    assert events.faults == []
    assert events.reports[-1] == ("sht4x", {"air_temperature": 22.0})
    assert comp.values() == {"air_temperature": 22.0}


def test_one_event_when_it_breaks_and_one_when_it_recovers() -> None:
    script = [{"air_temperature": 20}, ENODEV, ENODEV, ENODEV, ENODEV, ENODEV,
              {"air_temperature": 21}, {"air_temperature": 22}]
    comp, events, clock = make(FakeSensor(script), fail_after=3)
    states = []
    for _ in range(8):
        cycle(comp, clock)
        states.append(comp.state)
    assert states == ["ok", "warning", "warning", "failed", "failed", "failed", "ok", "ok"]
    assert events.faults == [
        ("sht4x", "warning", "OSError ENODEV (errno 19)"),
        ("sht4x", "ok", "recovered"),
    ]
    assert (comp.breaks, comp.recoveries) == (1, 1)


def test_every_kind_of_failure_counts_and_names_itself() -> None:
    script = [CRCError("sht4x: CRC mismatch on humidity"), SensorError("out of range"),
              KeyError("bug"), OSError(errno.ETIMEDOUT, "timeout")]
    comp, events, clock = make(FakeSensor(script), fail_after=10)
    details = []
    for _ in range(4):
        cycle(comp, clock)
        details.append(comp.detail)
    assert details == ["CRCError: sht4x: CRC mismatch on humidity", "SensorError: out of range",
                       "KeyError: 'bug'", "OSError ETIMEDOUT (errno 110)"]
    assert comp.failures == 4 and comp.state == "warning"
    assert len(events.faults) == 1


def test_not_ready_is_not_a_fault_and_reports_nothing() -> None:
    script = [NotReady("warming up"), {"air_temperature": 20}, NotReady("conversion"),
              {"air_temperature": 21}]
    comp, events, clock = make(FakeSensor(script))
    results = cycle(comp, clock, 4)
    assert results == [{}, {"air_temperature": 20}, {}, {"air_temperature": 21}]
    assert comp.failures == 0 and events.faults == []


def test_not_ready_in_warning_keeps_the_warning_without_new_events() -> None:
    comp, events, clock = make(FakeSensor([ENODEV, NotReady("x"), NotReady("x")]))
    cycle(comp, clock, 3)
    assert comp.state == "warning" and comp.failures == 1 and len(events.faults) == 1


def test_failing_setup_at_boot_breaks_and_is_retried_until_the_chip_answers() -> None:
    sensor = FakeSensor()
    sensor.setup_error = ENODEV
    comp, events, clock = make(sensor, fail_after=2)
    cycle(comp, clock, 4)
    assert comp.state == "failed" and sensor.setups == 4 and sensor.reads == 0
    sensor.setup_error = None
    cycle(comp, clock)
    assert comp.state == "ok" and sensor.setups == 5 and sensor.reads == 1
    assert [f[1] for f in events.faults] == ["warning", "ok"]


def test_failed_sets_the_driver_up_again_before_retrying() -> None:
    sensor = FakeSensor([ENODEV, ENODEV, {"air_temperature": 1}])
    comp, _, clock = make(sensor, fail_after=2)
    cycle(comp, clock, 3)
    assert sensor.setups == 2  # boot, and once more after entering failed


def test_fail_after_one_goes_straight_to_failed_with_one_event() -> None:
    comp, events, clock = make(FakeSensor([ENODEV, ENODEV]), fail_after=1)
    cycle(comp, clock, 2)
    assert events.faults == [("sht4x", "failed", "OSError ENODEV (errno 19)")]


# ---- stuck readings -------------------------------------------------------------------------


def test_identical_readings_for_m_updates_is_a_warning_once() -> None:
    same = {"air_temperature": 20.0, "air_humidity": 40.0}
    script = [same] * 6 + [{"air_temperature": 20.1, "air_humidity": 40.0}]
    comp, events, clock = make(FakeSensor(script), stuck_after=4)
    states = []
    for _ in range(7):
        cycle(comp, clock)
        states.append(comp.state)
    assert states == ["ok", "ok", "ok", "warning", "warning", "warning", "ok"]
    assert events.faults == [("sht4x", "warning", "stuck: same reading for 4 updates"),
                             ("sht4x", "ok", "recovered")]


def test_stuck_check_is_off_by_default_and_for_on_off_and_setpoints() -> None:
    comp, events, clock = make(FakeSensor([{"air_temperature": 5.0}] * 20))
    cycle(comp, clock, 20)
    assert comp.state == "ok"
    binary = [{"tank_ok_1": 1, "diffuser_duty_1": 40.0, "pump": 0}] * 20
    comp, events, clock = make(FakeSensor(binary), stuck_after=2)
    cycle(comp, clock, 20)
    assert comp.state == "ok" and events.faults == []


def test_stuck_looks_at_raw_readings_not_filtered_ones() -> None:
    script = [{"air_temperature": 20.0 + (i % 2) * 0.01} for i in range(10)]
    comp, events, clock = make(FakeSensor(script), stuck_after=3,
                               filters=[{"round": 0}, {"delta": 1}])
    reported = cycle(comp, clock, 10)
    assert comp.state == "ok" and events.faults == []
    assert reported[0] == {"air_temperature": 20} and all(r == {} for r in reported[1:])


# ---- backoff and schedule -------------------------------------------------------------------


def test_backoff_doubles_while_failed_and_is_capped() -> None:
    comp, _, clock = make(FakeSensor([ENODEV] * 20), fail_after=2, backoff_max_s=100)
    gaps = []
    for _ in range(10):
        before = clock.ms
        cycle(comp, clock)
        gaps.append(clock.ms - before)
    # first update at once; warning keeps the 10 s interval; failed: 20, 40, 80, then 100 cap.
    assert gaps == [0, 10_000, 20_000, 40_000, 80_000, 100_000, 100_000, 100_000, 100_000,
                    100_000]


def test_recovery_restores_the_normal_interval() -> None:
    comp, _, clock = make(FakeSensor([ENODEV] * 5), fail_after=2, backoff_max_s=1000)
    cycle(comp, clock, 6)
    assert comp.state == "ok" and comp.retry_delay_ms() == 10_000
    assert comp.ms_until_due(clock.ms) == 10_000


def test_cap_below_the_interval_never_shortens_it() -> None:
    comp, _, clock = make(FakeSensor([ENODEV] * 5), interval_s=60, fail_after=1,
                          backoff_max_s=5)
    cycle(comp, clock, 2)
    assert comp.retry_delay_ms() == 60_000


def test_not_due_does_not_read() -> None:
    sensor = FakeSensor()
    comp, _, clock = make(sensor)
    cycle(comp, clock)
    assert asyncio.run(comp.run_once(clock.ms + 9_999)) == {}
    assert sensor.reads == 1 and comp.due(clock.ms + 10_000)


def test_schedule_survives_a_ticks_wrap() -> None:
    comp, _, clock = make(FakeSensor())
    clock.ms = (1 << 30) - 3000
    cycle(comp, clock)
    assert not comp.due(1000) and comp.ms_until_due(1000) == 6000 and comp.due(7000)


# ---- filters --------------------------------------------------------------------------------


def test_per_quantity_filter_chains_with_a_default() -> None:
    script = [{"air_temperature": t, "air_humidity": h}
              for t, h in [(20.0, 40.0), (20.2, 40.4), (20.4, 55.0), (21.5, 41.0)]]
    comp, events, clock = make(FakeSensor(script),
                               filters={"air_humidity": [{"outlier": {"max_jump": 5}}],
                                        "*": [{"delta": 1}]})
    reported = cycle(comp, clock, 4)
    assert reported == [
        {"air_temperature": 20.0, "air_humidity": 40.0},
        {"air_humidity": 40.4},
        {},  # temperature moved < 1; humidity jump dropped
        {"air_temperature": 21.5, "air_humidity": 41.0},
    ]
    assert comp.values() == {"air_temperature": 21.5, "air_humidity": 41.0}
    assert [r[1] for r in events.reports] == [r for r in reported if r]


def test_a_failing_callback_never_stops_the_component(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("oops")

    comp, _, clock = make(FakeSensor([ENODEV]), on_fault=broken, on_report=broken)
    cycle(comp, clock, 3)
    assert comp.state == "ok"
    assert "callback failed: RuntimeError: oops" in capsys.readouterr().out


def test_sync_drivers_and_bad_results_are_handled() -> None:
    class Sync:
        def read(self) -> Any:
            return (42.0, 1234)  # the soil driver's tuple: not a reading

    comp, _, clock = make(Sync())
    cycle(comp, clock)
    assert comp.detail == "SensorError: read() gave tuple, not {quantity: value}"


# ---- config ---------------------------------------------------------------------------------


def test_from_config_fills_defaults() -> None:
    assert check_config("mq135", None) == {"interval_s": 60, "fail_after": 3, "stuck_after": 0,
                                          "backoff_max_s": 300, "filters": None}
    comp = Component.from_config("mq135", FakeSensor(),
                                 {"interval_s": 5, "filters": [{"median": 3}]})
    assert comp.interval_ms == 5000 and comp.fail_after == 3


@pytest.mark.parametrize(
    ("cfg", "error", "message"),
    [({"interval": 5}, ValueError, "mq135.interval: unknown field; known: backoff_max_s"),
     ({"interval_s": 0}, ValueError, "mq135.interval_s: must be a number 0.001..86400"),
     ({"fail_after": 0}, ValueError, "mq135.fail_after: must be a whole number 1..1000"),
     ({"stuck_after": 2.5}, ValueError, "mq135.stuck_after: must be a whole number"),
     ({"filters": {"co2": []}}, FilterConfigError, "mq135.filters.co2: unknown quantity"),
     ({"filters": {"mq135_ppm": [{"ema": 5}]}}, FilterConfigError,
      r"mq135.filters.mq135_ppm\[0\].ema: must be a number above 0"),
     ({"filters": "median"}, FilterConfigError, "mq135.filters: must be a list of filters"),
     ([1], ValueError, "mq135: must be an object")],
)
def test_config_errors_name_the_field(cfg: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Component.from_config("mq135", FakeSensor(), cfg)


def test_component_name_must_fit_an_event_name() -> None:
    with pytest.raises(ValueError, match="component name"):
        Component("Bad Name", FakeSensor())


def test_describe_is_the_same_on_both_ports() -> None:
    assert describe(OSError(19)) == "OSError ENODEV (errno 19)"
    assert describe(OSError(errno.ENODEV, "ENODEV")) == "OSError ENODEV (errno 19)"
    assert describe(ValueError("x" * 500)).startswith("ValueError: xxx")
    assert len(describe(ValueError("x" * 500))) == 120


# ---- the loop -------------------------------------------------------------------------------


def test_run_is_bounded_and_cancellable() -> None:
    sensor = FakeSensor([ENODEV, {"air_temperature": 1.0}])
    events = Events()
    fast = Component("fast", sensor, interval_s=0.001, on_fault=events.on_fault)
    asyncio.run(fast.run(max_updates=5))
    assert fast.updates == 5 and fast.state == "ok"
    assert [f[1] for f in events.faults] == ["warning", "ok"]

    async def cancel_soon() -> None:
        slow = Component("slow", FakeSensor(), interval_s=3600)
        task = asyncio.create_task(slow.run())
        for _ in range(3):
            await asyncio.sleep(0)
        assert slow.updates == 1  # read once, now waiting an hour
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())


def test_run_all_keeps_the_others_going_when_one_breaks() -> None:
    events = Events()
    good = Component("good", FakeSensor(), interval_s=0.001, on_fault=events.on_fault)
    bad = Component("bad", FakeSensor([ENODEV] * 10), interval_s=0.001, fail_after=2,
                    backoff_max_s=0.001, on_fault=events.on_fault)
    asyncio.run(run_all([good, bad], max_updates=4))
    assert good.updates == 4 and good.state == "ok"
    assert bad.updates == 4 and bad.state == "failed"
    assert events.faults == [("bad", "warning", "OSError ENODEV (errno 19)")]


# ---- real drivers on the emulated board ------------------------------------------------------


@pytest.mark.usefixtures("fresh_emulation")
def test_mq135_component_warms_up_without_a_fault_then_reports() -> None:
    clock = FakeClock(0)
    emulated_board("emulated", {"wiring": {"mq135": 35}, "adc_noise_raw": 0,
                                "mq135_heated_s": 0, "ventilation_per_s": 0}, clock)
    c = emu.get().world.conditions
    adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
    mq = MQ135(adc, r0_ohm=20000, rl_ohm=c["mq135_rl_kohm"] * 1000, vc=c["mq135_vc_v"],
               divider_ratio=c["mq135_divider_ratio"], warmup_s=30, clock=clock)
    events = Events()
    comp = Component("mq135", mq, interval_s=10, on_fault=events.on_fault,
                     on_report=events.on_report, clock=clock)
    reported = cycle(comp, clock, 5)
    assert reported[:3] == [{}, {}, {}]  # 0, 10, 20 s: warming up
    assert set(reported[3]) == {"mq135_ppm", "mq135_ratio"}
    assert comp.state == "ok" and events.faults == []
