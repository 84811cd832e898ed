# Builds the node's sensor components from its board profile and config. Every driver is
# wrapped in a Component (setup / update / report, warning / failed, one fault event per
# break and recovery), so one missing chip never takes the node down.
#
# Drivers are imported only for the chips the board has: on a microcontroller every module
# loaded costs heap for as long as the node runs.
from sensornode import compat, component

VOC_STATE_FILE = "voc_state.bin"


class SoilProbe:
    """The soil driver's (percent, raw) as protocol quantities."""

    def __init__(self, driver):
        self._driver = driver

    async def read(self):
        percent, raw = self._driver.read()
        return {"soil_moisture": round(percent, 1), "soil_raw": raw}


class Only:
    """Report only some of a driver's quantities (a BME680 next to an SHT4x would otherwise
    report a second, slightly different air temperature under the same name)."""

    def __init__(self, driver, keys):
        self._driver = driver
        self._keys = keys

    def setup(self):
        setup = getattr(self._driver, "setup", None)
        return setup() if setup is not None else None

    async def read(self):
        values = await self._driver.read()
        out = {}
        for key in self._keys:
            if key in values:
                out[key] = values[key]
        return out


class CompensatedVoc:
    """SGP40 fed with the air sensor's humidity and temperature (the VOC signal depends on
    them), saving the VOC algorithm's learned state to flash now and then."""

    def __init__(self, sgp40, climate, store):
        self._sgp40 = sgp40
        self._climate = climate  # a Component whose values() has air_humidity/air_temperature
        self._store = store

    async def read(self):
        air = self._climate.values() if self._climate is not None else {}
        values = await self._sgp40.read(air.get("air_humidity"), air.get("air_temperature"))
        self._store.maybe_save(self._sgp40.algorithm, compat.monotonic_ms(), compat.unix_time())
        return values


class Outputs:
    """The actuators' present state as a reading (pump, diffuser_duty_n)."""

    def __init__(self, read_outputs):
        self._read_outputs = read_outputs

    async def read(self):
        return self._read_outputs()


# Identical raw readings this many updates in a row mean a stuck sensor. Only for chips whose
# raw signal always carries some noise; a DS18B20 in still soil legitimately repeats for hours.
STUCK_AFTER = {"soil": 30, "sht4x": 30, "bme680": 30, "sgp40": 120, "mq135": 30}


def sensor_config(cfg, name, defaults=None):
    """The component config for `name`: the node's report interval and the stuck check unless
    config says otherwise."""
    merged = {"interval_s": cfg["report_interval_s"], "stuck_after": STUCK_AFTER.get(name, 0)}
    for source in (defaults or {}, cfg["sensors"].get(name, {})):
        for key in source:
            merged[key] = source[key]
    return merged


class SensorSet:
    """The components of one node, and the callbacks they report through."""

    def __init__(self, cfg, on_report, on_fault):
        self.cfg = cfg
        self.components = []
        self._on_report = on_report
        self._on_fault = on_fault

    def add(self, name, driver, defaults=None):
        comp = component.Component.from_config(
            name,
            driver,
            sensor_config(self.cfg, name, defaults),
            on_report=self._on_report,
            on_fault=self._on_fault,
        )
        self.components.append(comp)
        return comp

    def find(self, name):
        for comp in self.components:
            if comp.name == name:
                return comp
        return None

    def add_board_sensors(self, board, drone):
        """Sensors both roles may have: I2C air and aroma chips, 1-Wire probes, tank switches,
        the MQ-135. Which ones exist comes from the board profile."""
        models = {}
        for device in board.i2c_devices():
            models[device["model"]] = device["address"]
        if models:
            i2c = board.i2c_bus()
            if "sht4x" in models:
                from sensornode.drivers.sht4x import SHT4x

                self.add("sht4x", SHT4x(i2c, models["sht4x"]))
            if "bme680" in models:
                from sensornode.drivers.bme680 import BME680

                bme = BME680(i2c, models["bme680"])
                keys = ("pressure", "gas_resistance")
                if "sht4x" not in models:
                    keys = keys + ("air_temperature", "air_humidity")
                self.add("bme680", Only(bme, keys))
            if "sgp40" in models:
                from sensornode.drivers.sgp40 import SGP40
                from sensornode.voc_index import VocIndex
                from sensornode.voc_state import VocStateStore

                algorithm = VocIndex()
                store = VocStateStore(VOC_STATE_FILE)
                store.load(algorithm, compat.unix_time())
                climate = self.find("sht4x") or self.find("bme680")
                # The VOC index algorithm is specified for one sample per second; the filters
                # keep the telemetry to changes that matter plus a heartbeat.
                self.add(
                    "sgp40",
                    CompensatedVoc(
                        SGP40(i2c, models["sgp40"], algorithm=algorithm), climate, store
                    ),
                    {
                        "interval_s": 1,
                        "filters": {
                            "voc_index": [
                                {"delta": 2, "heartbeat_s": self.cfg["report_interval_s"]}
                            ],
                            "voc_raw": [
                                {"delta": 250, "heartbeat_s": self.cfg["report_interval_s"]}
                            ],
                        },
                    },
                )
        if board.has("onewire"):
            from sensornode.drivers.ds18b20 import DS18B20

            self.add(
                "ds18b20",
                DS18B20(board.onewire_bus(), resolution=self.cfg["ds18b20"]["resolution"]),
            )
        if board.tank_switches():
            from sensornode.drivers.float_switch import FloatSwitch
        for tank in board.tank_switches():
            switch = FloatSwitch(
                board.tank_switch_pin(tank),
                active_low=board.tank_switch_active_low,
                channel=tank if drone or len(board.tank_switches()) > 1 else None,
            )
            self.add("tank_switch_%d" % tank, switch)
        if board.has("mq135_adc"):
            from sensornode.drivers.mq135 import MQ135

            mq = self.cfg["mq135"]
            self.add(
                "mq135",
                MQ135(
                    board.mq135_adc(),
                    rl_ohm=mq["rl_ohm"],
                    r0_ohm=mq["r0_ohm"] or None,
                    vc=mq["vc"],
                    divider_ratio=mq["divider_ratio"],
                    warmup_s=mq["warmup_s"],
                    clean_air_ratio=mq["clean_air_ratio"],
                ),
            )
