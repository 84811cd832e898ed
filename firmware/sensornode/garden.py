# The garden role: soil moisture (and whatever else the board carries), an irrigation pump that
# only the node's safety layer switches, and, when the config has a plant profile, local
# autonomy: while the gateway is unreachable the node waters by that profile and reports what
# it did once the gateway is back (events of kind "autonomy", docs/protocol.md).
import json
import os

from sensornode.drivers.relay import Relay
from sensornode.drivers.soil_moisture import CapacitiveSoilMoisture
from sensornode.sensors import Outputs, SoilProbe

PUMP = "pump"
AUTONOMY_FILE = "autonomy.json"


class GardenRole:
    def __init__(self, node, board, cfg):
        self._node = node
        soil = CapacitiveSoilMoisture(
            board.soil_adc(),
            cfg["soil"]["dry_raw"],
            cfg["soil"]["wet_raw"],
            samples=board.adc_samples,
        )
        self._soil = node.sensors.add("soil", SoilProbe(soil))
        node.sensors.add_board_sensors(board, drone=False)
        self.pump = Relay(board.pump_relay_pin(), active_low=board.relay_active_low)
        node.sensors.add("outputs", Outputs(self.outputs))
        self.autonomy = None
        self._autonomy_path = node.root + AUTONOMY_FILE
        self._local_run = False  # the pump runs for the autonomy's last request
        if cfg["autonomy"]:
            from sensornode.autonomy import GardenAutonomy  # only nodes that water alone

            self.autonomy = GardenAutonomy(cfg["autonomy"], _load(self._autonomy_path))

    # ---- the safety layer's side ----------------------------------------------------------

    def actuators(self):
        return {"pumps": [PUMP], "diffusers": []}

    def drive(self, name, value):
        """Called by the safety layer only: the one place the relay is switched."""
        self.pump.set(value == 1)

    def safety_event(self, kind, name, state, detail):
        # A local run that ended early (e-stop, dry run, safe mode): the autonomy's log and
        # budget keep what really ran.
        if name == PUMP and self._local_run and state in ("stopped", "off"):
            self._local_run = False
            if state == "stopped" and self.autonomy is not None:
                now_s = self._node.clock.now()
                if now_s is not None:
                    self.autonomy.stopped(now_s, detail)
                    self._save()

    def outputs(self):
        return {"pump": 1 if self.pump.is_on else 0}

    # ---- commands --------------------------------------------------------------------------

    def obey(self, cmd):
        if cmd["action"] != "irrigate":
            return None
        safety = self._node.safety
        if safety.outputs()[PUMP]:
            return False, "pump already running; a second run is refused until it ends"
        return safety.request(
            PUMP, 1, "cmd " + cmd["id"], cmd["params"]["seconds"], cmd["expires"]
        )

    # ---- autonomy --------------------------------------------------------------------------

    def control(self):
        """One control tick: the profile may ask for a run while the gateway is away."""
        auto = self.autonomy
        if auto is None:
            return
        now_s = self._node.clock.now()
        if now_s is None:
            return  # the water budget is kept in wall-clock time: no time, no local runs
        request = auto.tick(now_s, self._moisture(), self._node.link.is_up)
        if request is None:
            return
        self._local_run = True
        ok, why = self._node.safety.request(PUMP, 1, request[0], request[1])
        if not ok:
            self._local_run = False
            auto.refused(now_s, why)
        self._save()

    def _moisture(self):
        # Never water blind: only a reading from a probe that currently works counts.
        if self._soil.state != "ok":
            return None
        return self._soil.values().get("soil_moisture")

    def link_changed(self, up):
        """The gateway is reachable again: report what the node did on its own, as events
        (they go through the outbox, so they arrive even if the link drops again)."""
        auto = self.autonomy
        if not up or auto is None:
            return
        entries = auto.report()
        if not entries and not auto.dropped:
            return
        if auto.dropped:
            self._node.event("autonomy", auto.name, "dropped",
                              "%d older runs not kept" % auto.dropped)
        for entry in entries:
            result = entry["result"]
            state, _, why = result.partition(": ")
            detail = "start %d, %s s, %s l, moisture %s %%" % (
                entry["start_s"], entry["seconds"], entry["litres"], entry["moisture"])
            if why:
                detail += "; " + why
            self._node.event("autonomy", auto.name, state, detail)
        auto.reported(len(entries))
        self._save()

    def _save(self):
        auto = self.autonomy
        if auto is None:
            return
        tmp = self._autonomy_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(auto.to_state()))
            os.rename(tmp, self._autonomy_path)
        except OSError as exc:
            # The node waters on; a reboot may forget this day's local water and the report.
            self._node.event("fault", "autonomy", "save_failed", str(exc))

    def tasks(self):
        return []


def _load(path):
    try:
        with open(path) as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        return None  # none yet, or damaged: a fresh log (the safety layer keeps the budget)
    return state if isinstance(state, dict) else None
