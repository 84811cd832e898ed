# The drone payload role: aroma and air sensors, PWM flavor diffusers whose runs are bounded by
# the node's own timer and whose duty never exceeds the configured cap.
from sensornode.actuators import TimedRun
from sensornode.drivers.diffuser import Diffuser
from sensornode.sensors import Outputs


class DroneRole:
    def __init__(self, node, board, cfg):
        self._node = node
        node.sensors.add_board_sensors(board, drone=True)
        settings = cfg["diffusers"]
        self.diffusers = {}
        self.runs = {}
        for channel in board.diffuser_channels():
            self.diffusers[channel] = Diffuser(
                board.diffuser_pwm(channel),
                freq_hz=settings["freq_hz"],
                max_duty_pct=settings["max_duty_pct"],
                ramp_pct_per_s=settings["ramp_pct_per_s"],
                channel=channel,
            )
            self.runs[channel] = TimedRun(
                "diffuser_%d" % channel,
                settings["max_run_s"],
                self.diffusers[channel].off,
                self._changed_callback(channel),
                "diffusers.max_run_s",
            )
        node.sensors.add("outputs", Outputs(self.outputs))

    def _changed_callback(self, channel):
        def changed(state, reason):
            self._node.actuator_changed("diffuser_%d" % channel, state, reason)

        return changed

    def outputs(self):
        out = {}
        for channel in self.diffusers:
            out["diffuser_duty_%d" % channel] = round(self.diffusers[channel].duty_pct, 1)
        return out

    def obey(self, cmd):
        if cmd["action"] != "diffuse":
            return None
        params = cmd["params"]
        channel = params["channel"]
        if channel not in self.diffusers:
            return False, "this payload has no diffuser channel %d (it has %s)" % (
                channel,
                ", ".join(str(c) for c in sorted(self.diffusers)) or "none",
            )
        run = self.runs[channel]
        reason = "cmd " + cmd["id"]
        # A new command for a channel replaces the one running on it.
        run.stop(reason)
        if params["duty_pct"] == 0:
            return True, "diffuser_%d off" % channel
        diffuser = self.diffusers[channel]
        ok, detail = run.start(params["seconds"], reason, lambda: diffuser.set(params["duty_pct"]))
        if ok and diffuser.target_pct < params["duty_pct"]:
            detail += " at %d %% (capped by diffusers.max_duty_pct)" % diffuser.target_pct
        return ok, detail

    def tasks(self):
        # Ramps move the duty a little every few tens of ms.
        return [diffuser.run() for diffuser in self.diffusers.values()]
