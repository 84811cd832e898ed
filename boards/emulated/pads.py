# The emulated board's pads: one per physical pin, holding what the chip does with it (mode,
# pull, output register, PWM duty and frequency, the Pin.irq handler). The emulation (emu.py)
# keeps them, records their changes and tells the world model what they drive.
#
# Runs under MicroPython and CPython.


def pin_label(pin):
    return "GPIO %d" % pin if isinstance(pin, int) else repr(pin)


class Pad:
    """One physical pin. mode: "in", "out", "od" (open drain) or "pwm"."""

    def __init__(self, pin):
        self.pin = pin
        self.mode = "in"
        self.pull = None  # "up", "down" or None
        self.out = 0  # output register; 0 after reset
        self.duty_u16 = 0
        self.freq = 0
        self.irq_handler = None
        self.irq_trigger = 0
        self.irq_pin = None  # the Pin object handed to the handler
        self.irq_level = None
        self.last = None

    def driven(self):
        """The level the chip forces on the wire: 0, 1, "pwm", or None (not driven)."""
        if self.mode == "out":
            return self.out
        if self.mode == "od":
            return 0 if self.out == 0 else None
        if self.mode == "pwm":
            if self.duty_u16 == 0:
                return 0
            return 1 if self.duty_u16 >= 65535 else "pwm"
        return None
