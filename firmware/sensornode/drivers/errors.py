# Errors every driver raises, so the component layer can tell "the chip is gone" (OSError from
# the bus, e.g. ENODEV) from "the chip answered but the answer cannot be trusted".
import errno


class SensorError(OSError):
    """A reading that cannot be trusted: bad CRC, out of range, not ready, invalid."""

    def __init__(self, message, code=errno.EIO):
        super().__init__(code, message)
        self.message = message

    def __str__(self):
        return self.message


class CRCError(SensorError):
    """The data and its checksum disagree (noise on the bus, a failing chip)."""


class NotReady(SensorError):
    """The chip has no valid result yet (conversion running, heater not stable, warm-up)."""
