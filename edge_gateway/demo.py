"""`neoterra demo`: a broker, the gateway and three emulated garden nodes, with live readings.

Every part runs in its own process and is stopped by PID on Ctrl-C (or after --duration), so
the demo leaves nothing behind.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edge_gateway.embedded_broker import READY_LINE
from edge_gateway.emulator import EmulatedNode
from edge_gateway.netutil import free_port, wait_port
from edge_gateway.procutil import stop_process
from edge_gateway.settings import SettingsError, broker_setting
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store

DEMO_SITE = "demo"
# Three beds that start at different moisture and dry at different speeds, so the readings
# visibly differ and move.
BEDS: list[tuple[str, dict[str, object]]] = [
    ("bed-1", {"soil_moisture": 62.0, "evaporation_pct_per_s": 0.05}),
    ("bed-2", {"soil_moisture": 41.0, "evaporation_pct_per_s": 0.15}),
    ("bed-3", {"soil_moisture": 23.0, "evaporation_pct_per_s": 0.10}),
]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def node_config(node: str, host: str, port: int, report_interval_s: int) -> dict[str, Any]:
    return {
        "site": DEMO_SITE,
        "node": node,
        "role": "garden",
        "wifi": {"ssid": "demo-garden", "password": "emulated"},
        "broker": {"host": host, "port": port, "keepalive_s": 15},
        "report_interval_s": report_interval_s,
    }


def start_embedded_broker(port: int, log_path: Path) -> subprocess.Popen[str]:
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway.embedded_broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the broker prints one line once it listens, or exits
    if READY_LINE not in line:
        proc.wait(timeout=10)
        raise RuntimeError(f"embedded broker did not start; see {log_path}")
    return proc


def start_gateway(host: str, port: int, db: Path, log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_gateway",
            "gateway",
            "run",
            "--broker",
            f"{host}:{port}",
            "--site",
            DEMO_SITE,
            "--db",
            str(db),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def latest_by_node(db: Path) -> dict[str, dict[str, float]]:
    """The newest value of each quantity per node, and how many readings the gateway stored."""
    if not db.exists():
        return {}  # the gateway has not created its store yet
    latest: dict[str, dict[str, float]] = {}
    with Store(db) as store:
        for reading in store.latest_readings():
            latest.setdefault(reading.node, {})[reading.quantity] = reading.value
        counts = store.query("SELECT node, COUNT(DISTINCT seq) FROM readings GROUP BY node")
    for node, count in counts:
        latest.setdefault(node, {})["readings"] = count
    return latest


def _shown(values: dict[str, float], quantity: str, unit: str) -> str:
    value = values.get(quantity)
    return f"{value:5.1f} {unit}" if value is not None else f"  -- {unit}"


def format_line(node: str, values: dict[str, float]) -> str:
    pump = "ON " if values.get("pump") else "off"
    stored = int(values.get("readings", 0))
    return (
        f"  {node:8s} soil moisture {_shown(values, 'soil_moisture', '%')}  "
        f"soil {_shown(values, 'soil_temperature', 'C')}  "
        f"air {_shown(values, 'air_temperature', 'C')} {_shown(values, 'air_humidity', '%RH')}"
        f"  pump {pump}  stored readings {stored}"
    )


def stop_all(procs: list[tuple[str, subprocess.Popen[Any]]], nodes: list[EmulatedNode]) -> None:
    for node in nodes:
        node.stop()
    for _, proc in reversed(procs):  # gateway before the broker, so it can say goodbye
        stop_process(proc)


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "neoterra.db"
    procs: list[tuple[str, subprocess.Popen[Any]]] = []
    nodes: list[EmulatedNode] = []
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if args.broker:
            address = broker_setting(args.broker)
            host, port = address.host, address.port
            print(f"demo: using the broker at {host}:{port}")
        else:
            host, port = "127.0.0.1", args.port or free_port()
            procs.append(("broker", start_embedded_broker(port, workdir / "broker.log")))
            print(f"demo: embedded broker (amqtt) on {host}:{port}")
        wait_port(host, port, timeout=10)
        procs.append(("gateway", start_gateway(host, port, db, workdir / "gateway.log")))
        print(f"demo: gateway storing into {db}")
        keys = KeyRing(workdir / "keys")
        for name, world in BEDS:
            if not keys.path(name).exists():  # a demo directory used before keeps its keys
                keys.create(name)
            config = {**node_config(name, host, port, args.interval),
                      "cmd_key": keys.key(name).hex()}
            node = EmulatedNode(workdir / name, config, world=world)
            node.start()
            nodes.append(node)
        print(
            f"demo: {len(nodes)} garden nodes running firmware/ on emulated boards "
            f"({nodes[0].interpreter_name}); logs in {workdir}"
        )
        print(
            "demo: water a bed from another terminal with\n"
            f"  .venv/bin/neoterra irrigate bed-3 10 --broker {host}:{port} --site {DEMO_SITE}"
            f" --keys {keys.directory} --db {db}"
        )
        print("demo: live readings (Ctrl-C stops everything)")
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(
                        f"demo: the {name} exited with {proc.returncode}; see {workdir}/{name}.log"
                    )
                    return 1
            latest = latest_by_node(db)
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}]")
            for name, _ in BEDS:
                print(format_line(name, latest.get(name, {})))
            sys.stdout.flush()
            time.sleep(min(2.0, args.interval))
        return 0
    except SettingsError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stop):
        print("\ndemo: stopping")
        return 0
    finally:
        # A second Ctrl-C while stopping must not abandon the processes still running.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all(procs, nodes)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
        print(f"demo: stopped every process it started; the store is kept at {db}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", help="use an external broker HOST:PORT instead of the embedded one"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port for the embedded broker (default: a free one)"
    )
    parser.add_argument(
        "--workdir", default="demo-run", help="where the store, logs and node flash live"
    )
    parser.add_argument("--interval", type=int, default=2, help="node report interval in seconds")
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )


def main(args: argparse.Namespace) -> int:
    return run(args)
