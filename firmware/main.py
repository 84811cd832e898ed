# Entry point on the device (and on the emulated board): load the node config and the board
# profile from flash, build the hardware through sensornode.board, run the node.
#
# A crash (an exception nothing below caught) resets the board after a pause instead of
# leaving it at the REPL: an unattended node must come back. The reset counts as unexplained,
# so a node that crashes on every boot ends up in safe mode (sensornode.boot) and says why.
import json
import sys
import time

from sensornode import app, config
from sensornode.board import Board

BOARD_FILE = "board.json"
CRASH_RESET_DELAY_S = 10  # no faster crash loop than this (the watchdog may bite sooner)


def load_board_profile(path=BOARD_FILE):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise config.ConfigError(
            "%s: cannot load the board profile (%s); copy boards/<board>/profile.json "
            "there" % (path, exc)
        ) from None


def main():
    try:
        cfg = config.load()
        board = Board(load_board_profile())
    except (config.ConfigError, ValueError) as exc:
        # Nothing is started with a bad config: no half-applied pins, no connection attempts.
        print("[node] config error:", exc)
        raise SystemExit(2) from None
    try:
        app.main(cfg, board)
    except Exception as exc:  # whatever it was, the node must come back
        print("[node] crashed:", repr(exc))
        print_exception = getattr(sys, "print_exception", None)  # MicroPython's traceback
        if print_exception is not None:
            print_exception(exc)
        time.sleep(CRASH_RESET_DELAY_S)
        board.reset()


main()
