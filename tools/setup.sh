#!/bin/sh
# Installs what `make demo` (setup.sh demo) or `make test` (setup.sh test) needs on a fresh
# Debian / Raspberry Pi OS machine: system packages (when missing and we are root), the venv,
# the Python packages, and for tests the MicroPython board stubs. Safe to run again: each step
# is skipped when already done for the current pyproject.toml.
set -eu
MODE=${1:-test}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        say "missing system package(s): $* -- install them with: sudo apt-get install -y $*"
        exit 1
    fi
    say "apt-get install $*"
    if [ ! -f /tmp/.neoterra-apt-updated ]; then
        apt-get update -qq && touch /tmp/.neoterra-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    say "Python >= 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
fi

if [ "$MODE" = test ]; then
    # Tests start their own broker on a free port; the binary is all they need.
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    # TLS tests make a throwaway CA and broker certificate with the openssl command.
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    EXTRA=dev
else
    EXTRA=emulator
fi

STAMP="$VENV/.installed-$EXTRA-$(cksum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
    say "installing Python packages (.[$EXTRA]) into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRA]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

if [ "$MODE" = test ]; then
    # pyright checks the firmware against each target's MicroPython stubs, kept apart from
    # the venv so CPython's stdlib and packages cannot leak into the check.
    for target in esp32:micropython-esp32-stubs pico_w:micropython-rp2-rpi-pico-w-stubs; do
        dir="build/stubs/${target%%:*}"
        pkg="${target#*:}==1.29.0.post1"
        if [ ! -f "$dir/.installed-$pkg" ]; then
            say "installing $pkg into $dir"
            rm -rf "$dir"
            "$VENV/bin/python" -m pip install -q --target "$dir" "$pkg"
            touch "$dir/.installed-$pkg"
        fi
    done
fi
say "ready ($MODE)"
