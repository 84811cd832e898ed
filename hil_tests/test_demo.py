"""`neoterra demo`: readings from 3 emulated nodes within 30 s, stored in the gateway's SQLite
file, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_gateway.store import Store
from testkit.procs import stop_process, wait_for

NODES = {"bed-1", "bed-2", "bed-3"}


def processes_using(marker: str) -> list[str]:
    """PIDs (with command lines) of live processes whose cwd or command line mentions marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # exited meanwhile, or not ours to read
        if marker in cmdline or marker in cwd:
            found.append(f"{entry.name}: {cmdline}")
    return found


def nodes_with_readings(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with Store(db) as store:
        return {r.node for r in store.latest_readings()}


def test_demo_shows_three_nodes_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    out_path = tmp_path / "demo.out"
    with out_path.open("w") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_gateway",
                "demo",
                "--workdir",
                str(workdir),
                "--interval",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        wait_for(
            lambda: nodes_with_readings(workdir / "neoterra.db") == NODES,
            timeout=30,
            what="readings from all 3 demo nodes in the store",
            proc=None,
        )
        assert time.monotonic() - started < 30
        wait_for(
            lambda: all(
                f"{n} " in out_path.read_text() and "soil moisture" in out_path.read_text()
                for n in NODES
            ),
            timeout=10,
            what="live readings printed",
        )
        assert processes_using(str(workdir)), "the demo's node processes should be running"
    finally:
        code = stop_process(demo, sig=signal.SIGINT, grace=20)  # SIGINT is what Ctrl-C sends
    output = out_path.read_text()
    assert code == 0, output
    assert "stopped every process" in output
    assert processes_using(str(workdir)) == [], output
    text = output.split("live readings")[1]
    for node in NODES:
        assert f"  {node}" in text
