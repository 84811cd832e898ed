# Entry point on the device (and on the emulated board): load the node config and the board
# profile from flash, build the hardware through sensornode.board, run the node.
import json

from sensornode import app, config
from sensornode.board import Board

BOARD_FILE = "board.json"


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
    app.main(cfg, board)


main()
