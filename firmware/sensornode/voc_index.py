# VOC index from the SGP40's raw signal (SRAW): our own implementation of the algorithm
# Sensirion describes for its VOC Index (application note "SGP40 VOC Index", the gas index
# algorithm). Written from that description, not from anyone's source; the test suite checks
# it against Sensirion's PyPI package (tests only) to within +/-1 index point.
#
# The pipeline, once per sample (1 s by default):
#   SRAW -> MOX model: how many "learned standard deviations" the signal is below its
#           learned mean, scaled by a gain      (lower SRAW = more VOC = higher index)
#        -> sigmoid scaling to 0..500, so the learned average lands on 100
#        -> adaptive lowpass: fast when the signal moves a lot, slow when it only jitters
#        -> the index (rounded, >= 1)
#   and then the learning step: an exponentially forgetting mean and variance of SRAW,
#   learning fast during the first hour(s), slowly afterwards (12 h time constants), and
#   gated: while the index is high (a VOC event) learning stops, so events do not become
#   the new normal - unless the "event" lasts longer than the gating limit (3 h by default).
# During the first 45 s (the initial blackout, while the hotplate settles) process() returns
# 0, which is never a valid index: callers report the raw value only.
#
# Precision: the state is kept relative to a moving offset so that single-precision floats
# (ESP32, RP2: 32-bit MicroPython floats) keep enough resolution; tests re-run the algorithm
# with its state rounded to float32 after every sample and still match the oracle.
import math

try:
    from typing import Any, Tuple
except ImportError:
    pass

# Sensirion's VOC tuning defaults and model constants (application note values).
_SRAW_MIN = 20000  # SRAW below the useful range; the model works on SRAW - _SRAW_MIN
_SRAW_SPAN = 32767  # ... up to _SRAW_MIN + _SRAW_SPAN
_BLACKOUT_S = 45.0
_STD_BONUS = 220.0  # added to the learned std in the MOX model
_SIG_L = 500.0  # index range of the output sigmoid
_SIG_K = -0.0065
_SIG_X0 = 213.0
_LP_TAU_FAST = 20.0  # adaptive lowpass: fast and slow time constants (s)
_LP_TAU_SLOW = 500.0
_LP_ALPHA = -0.2  # how quickly a fast/slow disagreement switches to the fast constant
_TAU_MEAN_START = 20.0  # learning time constants at start-up (s)
_TAU_VAR_START = 2500.0
_START_MEAN_S = 2700.0  # start-up phase lengths (0.75 h for the mean, 1.45 h for variance)
_START_VAR_S = 5220.0
_START_STEEPNESS = 0.01  # 1/s: how sharply the start-up phases end
_GATE_START = 510.0  # index above which learning stops, during start-up ...
_GATE = 340.0  # ... and afterwards
_GATE_STEEPNESS = 0.09  # 1/index point
_GATE_RECOVERY = 0.3  # gating time recovers at 0.3 min per min of ungated learning
_RECENTER = 100.0  # move the mean into the offset once it drifts this far (precision)
_UPTIME_CAP_S = 36000.0  # counters stop here; every start-up sigmoid is long flat by then
_RESTORED_UPTIME_S = 10800.0  # a restored baseline counts as 3 h of learning

# Indices into get_state()'s tuple; STATE_LEN is its length.
STATE_LEN = 16
_FIELDS = ("uptime", "sraw", "index", "est_ready", "mean", "offset", "std", "learn_s",
           "gate_s", "gated_min", "mox_mean", "mox_std", "lp_ready", "lp_fast", "lp_slow",
           "lp_out")


def _falling(x, centre, steepness):
    """1 well below `centre`, 0 well above, 0.5 at it (a logistic step)."""
    z = steepness * (x - centre)
    if z > 50.0:
        return 0.0
    if z < -50.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(z))


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x \
        and -1e30 < x < 1e30


class VocIndex:
    """Turns one SRAW sample per `sampling_interval_s` into a VOC index (1..500, 100 = the
    learned typical air), or 0 while in the initial blackout.

    Tuning parameters mean what Sensirion's do (index_offset 1..250, learning times in hours,
    gating limit in minutes, initial std, gain); the defaults are Sensirion's."""

    def __init__(self, sampling_interval_s: float = 1.0, index_offset: float = 100.0,
                 learning_time_offset_h: float = 12.0, learning_time_gain_h: float = 12.0,
                 gating_max_duration_min: float = 180.0, std_initial: float = 50.0,
                 gain_factor: float = 230.0) -> None:
        dt = float(sampling_interval_s)
        if not 0.0 < dt <= 3600.0:
            raise ValueError("sampling_interval_s: must be in (0, 3600], got %r"
                             % (sampling_interval_s,))
        if not 1 <= index_offset <= 250:
            raise ValueError("index_offset: must be 1..250, got %r" % (index_offset,))
        for name, value in (("learning_time_offset_h", learning_time_offset_h),
                            ("learning_time_gain_h", learning_time_gain_h),
                            ("gating_max_duration_min", gating_max_duration_min),
                            ("std_initial", std_initial), ("gain_factor", gain_factor)):
            if not _is_number(value) or value <= 0:
                raise ValueError("%s: must be a positive number, got %r" % (name, value))
        self.sampling_interval_s = dt
        self._offset_index = float(index_offset)
        self._gate_max_min = float(gating_max_duration_min)
        self._std0 = float(std_initial)
        self._gain = float(gain_factor)
        # Learning rates: the fraction of the error taken into the estimate per sample.
        h = dt / 3600.0
        self._rate_mean = h / (learning_time_offset_h + h)
        self._rate_var = h / (learning_time_gain_h + h)
        self._rate_mean0 = dt / (_TAU_MEAN_START + dt)
        self._rate_var0 = dt / (_TAU_VAR_START + dt)
        self._a_fast = dt / (_LP_TAU_FAST + dt)
        self._a_slow = dt / (_LP_TAU_SLOW + dt)
        # Output sigmoid shift that keeps index_offset at the learned mean.
        self._shift = (_SIG_L - 5.0 * self._offset_index) / 4.0
        self.reset()

    def reset(self) -> None:
        """Forget everything: blackout and start-up learning begin again."""
        self._uptime = 0.0  # time since start, until the blackout is over
        self._sraw = 0.0  # last valid SRAW - _SRAW_MIN
        self._index = 0.0
        self._reset_estimator()
        self._mox_mean = 0.0
        self._mox_std = 1.0
        self._lp_ready = False
        self._lp_fast = self._lp_slow = self._lp_out = 0.0

    def _reset_estimator(self):
        self._est_ready = False
        self._mean = 0.0  # relative to self._offset
        self._offset = 0.0
        self._std = self._std0
        self._learn_s = 0.0  # time spent learning (drives the start-up phases)
        self._gate_s = 0.0  # time since gating was last reset (drives the gate threshold)
        self._gated_min = 0.0  # how long learning has been held off, minutes (leaky)

    # ---- the pipeline --------------------------------------------------------------------

    def process(self, sraw: int) -> int:
        """Feed one SRAW sample; return the VOC index 1..500, or 0 during the blackout.
        A sample outside 1..64999 is not a measurement: the last valid one is used."""
        if self._uptime <= _BLACKOUT_S:
            self._uptime += self.sampling_interval_s
            return 0
        if 0 < sraw < 65000:
            s = sraw - _SRAW_MIN
            if s < 1:
                s = 1
            elif s > _SRAW_SPAN:
                s = _SRAW_SPAN
            self._sraw = float(s)
        index = self._smooth(self._scale(self._mox(self._sraw)))
        if index < 0.5:
            index = 0.5
        self._index = index
        if self._sraw > 0.0:
            self._learn(self._sraw)
            self._mox_mean = self._mean + self._offset
            self._mox_std = self._std
        return int(index + 0.5)

    def _mox(self, s):
        # Positive when the signal is below its learned mean (more VOC), in units of the
        # learned spread plus a floor, times the gain.
        return (self._mox_mean - s) / (self._mox_std + _STD_BONUS) * self._gain

    def _scale(self, m):
        z = _SIG_K * (m - _SIG_X0)
        if z < -50.0:
            return _SIG_L
        if z > 50.0:
            return 0.0
        e = 1.0 + math.exp(z)
        if m >= 0.0:
            return (_SIG_L + self._shift) / e - self._shift
        return self._offset_index / 100.0 * _SIG_L / e

    def _smooth(self, x):
        if not self._lp_ready:
            self._lp_fast = self._lp_slow = self._lp_out = x
            self._lp_ready = True
        self._lp_fast += self._a_fast * (x - self._lp_fast)
        self._lp_slow += self._a_slow * (x - self._lp_slow)
        # The two filters disagree while the signal moves: then follow quickly.
        tau = _LP_TAU_FAST + (_LP_TAU_SLOW - _LP_TAU_FAST) * math.exp(
            _LP_ALPHA * abs(self._lp_fast - self._lp_slow))
        dt = self.sampling_interval_s
        self._lp_out += dt / (dt + tau) * (x - self._lp_out)
        return self._lp_out

    def _learn(self, s):
        if not self._est_ready:
            self._est_ready = True
            self._offset = s
            self._mean = 0.0
            return
        if self._mean >= _RECENTER or self._mean <= -_RECENTER:
            self._offset += self._mean
            self._mean = 0.0
        x = s - self._offset
        dt = self.sampling_interval_s
        if self._learn_s < _UPTIME_CAP_S:
            self._learn_s += dt
        if self._gate_s < _UPTIME_CAP_S:
            self._gate_s += dt
        index = self._index
        # Start-up phases: the mean learns fast first; the variance learns fast after that.
        start_mean = _falling(self._learn_s, _START_MEAN_S, _START_STEEPNESS)
        start_var = _falling(self._learn_s, _START_VAR_S, _START_STEEPNESS)
        # Learning is gated off while the index is above a threshold that is lenient at
        # start-up (and again after a long gated stretch).
        gate = _GATE_START - _GATE
        open_mean = _falling(index, _GATE + gate * _falling(
            self._gate_s, _START_MEAN_S, _START_STEEPNESS), _GATE_STEEPNESS)
        open_var = _falling(index, _GATE + gate * _falling(
            self._gate_s, _START_VAR_S, _START_STEEPNESS), _GATE_STEEPNESS)
        rate_mean = open_mean * (self._rate_mean
                                 + (self._rate_mean0 - self._rate_mean) * start_mean)
        rate_var = open_var * (self._rate_var
                               + (self._rate_var0 - self._rate_var) * (start_var - start_mean))
        self._gated_min += dt / 60.0 * ((1.0 - open_mean) * (1.0 + _GATE_RECOVERY)
                                        - _GATE_RECOVERY)
        if self._gated_min < 0.0:
            self._gated_min = 0.0
        if self._gated_min > self._gate_max_min:
            self._gate_s = 0.0  # held off too long: relearn the new level as if starting
        err = x - self._mean
        self._std = math.sqrt((1.0 - rate_var) * (self._std * self._std + rate_var * err * err))
        self._mean += rate_mean * err

    # ---- introspection and persistence -----------------------------------------------------

    @property
    def in_blackout(self) -> bool:
        return self._uptime <= _BLACKOUT_S

    @property
    def mean(self) -> float:
        """Learned mean of SRAW - 20000 (Sensirion's "state0")."""
        return self._mean + self._offset

    @property
    def std(self) -> float:
        """Learned standard deviation of SRAW (Sensirion's "state1")."""
        return self._std

    @property
    def learning_s(self) -> float:
        """Seconds of learning so far (capped at 10 h); a restored baseline counts as 3 h."""
        return self._learn_s

    def get_state(self) -> "Tuple[float, ...]":
        """Everything the algorithm has learned and is filtering, as STATE_LEN floats."""
        return (self._uptime, self._sraw, self._index, 1.0 if self._est_ready else 0.0,
                self._mean, self._offset, self._std, self._learn_s, self._gate_s,
                self._gated_min, self._mox_mean, self._mox_std,
                1.0 if self._lp_ready else 0.0, self._lp_fast, self._lp_slow, self._lp_out)

    def set_state(self, state: "Any", resume: bool = False) -> None:
        """Load a get_state() tuple. resume=True continues exactly where it was taken (same
        power cycle). resume=False is for after a reboot, like Sensirion's set_states(): keep
        the learned baseline (mean, std), count it as 3 h of learning, and run the blackout,
        the filters and the gating start-up again, since the hotplate was off.
        Raises ValueError for a state that is not one of ours."""
        if len(state) != STATE_LEN:
            raise ValueError("VOC state: expected %d values, got %d" % (STATE_LEN, len(state)))
        for i in range(STATE_LEN):
            if not _is_number(state[i]):
                raise ValueError("VOC state: %s is %r" % (_FIELDS[i], state[i]))
        mean = state[4] + state[5]
        if not (state[6] > 0.0 and -1.0 <= mean <= _SRAW_SPAN + 1.0):
            raise ValueError("VOC state: mean %r, std %r out of range" % (mean, state[6]))
        if resume:
            (self._uptime, self._sraw, self._index, ready, self._mean, self._offset,
             self._std, self._learn_s, self._gate_s, self._gated_min, self._mox_mean,
             self._mox_std, lp_ready, self._lp_fast, self._lp_slow,
             self._lp_out) = [float(v) for v in state]
            self._est_ready = ready == 1.0
            self._lp_ready = lp_ready == 1.0
            return
        if state[3] != 1.0:
            raise ValueError("VOC state: no learned baseline yet")
        self.set_baseline(mean, state[6])

    def set_baseline(self, mean: float, std: float) -> None:
        """Start afresh from a learned baseline: Sensirion's state0 (mean of SRAW - 20000) and
        state1 (std), e.g. after a reboot. The blackout and the filters start again."""
        if not (_is_number(mean) and _is_number(std) and std > 0.0
                and -1.0 <= mean <= _SRAW_SPAN + 1.0):
            raise ValueError("VOC state: mean %r, std %r out of range" % (mean, std))
        self.reset()
        self._est_ready = True
        self._mean = float(mean)
        self._offset = 0.0
        self._std = float(std)
        self._learn_s = _RESTORED_UPTIME_S
        self._mox_mean = self._mean
        self._mox_std = self._std
        self._sraw = self._mean
