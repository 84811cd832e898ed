# The garden role: soil moisture (and whatever else the board carries), an irrigation pump
# whose runs are bounded by the node's own timer.
from sensornode.actuators import TimedRun
from sensornode.drivers.relay import Relay
from sensornode.drivers.soil_moisture import CapacitiveSoilMoisture
from sensornode.sensors import Outputs, SoilProbe


class GardenRole:
    def __init__(self, node, board, cfg):
        self._node = node
        soil = CapacitiveSoilMoisture(
            board.soil_adc(),
            cfg["soil"]["dry_raw"],
            cfg["soil"]["wet_raw"],
            samples=board.adc_samples,
        )
        node.sensors.add("soil", SoilProbe(soil))
        node.sensors.add_board_sensors(board, drone=False)
        self.pump = Relay(board.pump_relay_pin(), active_low=board.relay_active_low)
        self.irrigation = TimedRun(
            "pump",
            cfg["irrigation"]["max_run_s"],
            self.pump.off,
            self._pump_changed,
            "irrigation.max_run_s",
        )
        node.sensors.add("outputs", Outputs(self.outputs))

    def _pump_changed(self, state, reason):
        self._node.actuator_changed("pump", state, reason)

    def outputs(self):
        return {"pump": 1 if self.pump.is_on else 0}

    def obey(self, cmd):
        if cmd["action"] == "irrigate":
            return self.irrigation.start(cmd["params"]["seconds"], "cmd " + cmd["id"], self.pump.on)
        return None

    def tasks(self):
        return []
