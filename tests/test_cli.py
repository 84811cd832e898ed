"""The `neoterra` command as users run it: a subprocess, its output and its exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.cli import main
from edge_gateway.settings import BrokerAddress, parse_broker
from edge_gateway.store import Reading, Status, Store, Telemetry
from testkit.mosquitto import Mosquitto, free_port
from testkit.procs import stop_process, wait_for
from tests.test_commands import Script, ScriptedNode, answer_started
from tests.test_ingest import T0, FakeNode

WAIT_S = 10.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEOTERRA_")}
    env.update(extra)
    return env


def neoterra(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_gateway", *args], cwd=cwd,
                          env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def start_gateway(cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = cwd / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_gateway", "gateway", "run", *args],
                                cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def fill_store(db: Path) -> None:
    with Store(db) as store:
        store.write([
            Status("home", "bed-1", True, T0, role="garden", fw="0.1.0", board="esp32_devkitc"),
            Telemetry("home", "bed-1", (
                Reading("bed-1", 1, T0, "soil_moisture", 41.5, T0),
                Reading("bed-1", 1, T0, "pump", 0.0, T0),
            ), T0),
            Status("home", "bed-2", False, T0),
        ])


def test_nodes_lists_nodes_with_latest_values(tmp_path: Path) -> None:
    fill_store(tmp_path / "neoterra.db")  # the default --db, relative to the working dir
    result = neoterra("nodes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, bed1, bed2 = result.stdout.splitlines()
    assert header.split() == ["NODE", "ONLINE", "ROLE", "FW", "BOARD", "LAST", "SEEN", "LATEST"]
    assert bed1.split()[:5] == ["bed-1", "yes", "garden", "0.1.0", "esp32_devkitc"]
    assert bed1.endswith("pump=0 soil_moisture=41.5")
    assert bed2.split() == ["bed-2", "no", "-", "-", "-", "never", "-"]


def test_nodes_reads_the_database_named_by_the_environment(tmp_path: Path) -> None:
    fill_store(tmp_path / "site.db")
    result = neoterra("nodes", cwd=tmp_path, env=clean_env(NEOTERRA_DB=str(tmp_path / "site.db")))
    assert result.returncode == 0 and "bed-1" in result.stdout


def test_nodes_without_a_database_says_how_to_get_one(tmp_path: Path) -> None:
    result = neoterra("nodes", "--db", "missing.db", cwd=tmp_path)
    assert result.returncode == 1
    assert "no database at missing.db" in result.stderr and "gateway run" in result.stderr
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(("script", "code", "expected"), [
    (answer_started, 0, "node bed-1: irrigate 5 s started"),
    (lambda cmd: [(cmd["id"], False, "refused", "tank empty")], 1,
     "node bed-1 refused irrigate 5 s (refused): tank empty"),
])
def test_irrigate_prints_the_ack(mosquitto: Mosquitto, tmp_path: Path, script: Script,
                                 code: int, expected: str) -> None:
    node = ScriptedNode(mosquitto, "bed-1", script)
    try:
        result = neoterra("irrigate", "bed-1", "5", "--broker", f"127.0.0.1:{mosquitto.port}",
                          cwd=tmp_path)
    finally:
        node.close()
    assert result.returncode == code
    assert expected in (result.stdout if code == 0 else result.stderr)


def test_diffuse_sends_channel_duty_and_seconds_and_prints_the_ack(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    seen: list[dict[str, object]] = []

    def answer(cmd: dict[str, Any]) -> list[tuple[str, bool, str, str]]:
        seen.append(cmd)
        return [(cmd["id"], True, "started", "diffuser_2 on for 30 s")]

    node = ScriptedNode(mosquitto, "drone-1", answer)
    try:
        result = neoterra("diffuse", "drone-1", "2", "60", "30",
                          "--broker", f"127.0.0.1:{mosquitto.port}", cwd=tmp_path)
    finally:
        node.close()
    assert result.returncode == 0, result.stderr
    assert "node drone-1: diffuse channel 2 at 60 % for 30 s started" in result.stdout
    assert [c["action"] for c in seen] == ["diffuse"]
    assert seen[0]["params"] == {"channel": 2, "duty_pct": 60, "seconds": 30}


@pytest.mark.parametrize(("args", "names"), [
    (["9", "50", "10"], "cmd.params.channel: must be an integer in 1..4"),
    (["1", "150", "10"], "cmd.params.duty_pct: must be an integer in 0..100"),
    (["one", "50", "10"], "argument CHANNEL"),
])
def test_bad_diffuse_arguments_are_usage_errors(tmp_path: Path, args: list[str],
                                                names: str) -> None:
    result = neoterra("diffuse", "drone-1", *args, "--broker", f"127.0.0.1:{free_port()}",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert names in result.stderr


def test_irrigate_timeout_exits_1_with_a_hint(mosquitto: Mosquitto, tmp_path: Path) -> None:
    result = neoterra("irrigate", "bed-1", "5", "--timeout", "0.3", "--site", "home",
                      cwd=tmp_path, env=clean_env(NEOTERRA_BROKER=f"127.0.0.1:{mosquitto.port}"))
    assert result.returncode == 1
    assert "no ack from node bed-1 within 0.3 s" in result.stderr


@pytest.mark.parametrize(("args", "env", "names"), [
    (["--broker", "localhost:notaport"], {}, "--broker: port 'notaport'"),
    ([], {"NEOTERRA_BROKER": "localhost:99999"}, "$NEOTERRA_BROKER: port '99999'"),
    (["--site", "My Garden"], {}, "--site: 'My Garden' is not a site name"),
    (["--password-file", "pw"], {}, "--password-file needs --username"),
    (["--timeout", "soon"], {}, "argument --timeout"),
])
def test_bad_settings_are_usage_errors(tmp_path: Path, args: list[str], env: dict[str, str],
                                       names: str) -> None:
    result = neoterra("irrigate", "bed-1", "5", *args, cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 2
    assert names in result.stderr


@pytest.mark.parametrize(("seconds", "names"), [("0", "seconds"), ("ten", "SECONDS")])
def test_bad_seconds_are_usage_errors(tmp_path: Path, seconds: str, names: str) -> None:
    result = neoterra("irrigate", "bed-1", seconds, "--broker", f"127.0.0.1:{free_port()}",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert names in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_gateway_run_ingests_until_signalled(mosquitto: Mosquitto, tmp_path: Path,
                                             stop_signal: int) -> None:
    proc, log = start_gateway(tmp_path, "--broker", f"{mosquitto.host}:{mosquitto.port}")
    node = FakeNode(mosquitto, "bed-1")
    try:
        node.birth()  # retained: reaches the gateway whenever it subscribes
        db = tmp_path / "neoterra.db"
        wait_for(lambda: db.exists(), WAIT_S, "the gateway's database", proc=proc)
        with Store(db) as store:
            wait_for(lambda: [n.online for n in store.nodes()] == [True], WAIT_S,
                     "bed-1 online", proc=proc)
            node.telemetry(1, soil_moisture=40.0)
            wait_for(lambda: store.counts()["readings"] == 1, WAIT_S, "the reading", proc=proc)
    finally:
        node.close()
        code = stop_process(proc, sig=stop_signal)
    output = log.read_text()
    assert code == 0, output
    assert "node bed-1 is online" in output and "shutting down" in output


def test_gateway_run_exits_1_when_the_broker_refuses_the_password(tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "gw", "right"],
                   check=True, capture_output=True, timeout=WAIT_S)
    (tmp_path / "gw-password").write_text("wrong\n")
    config = f"allow_anonymous false\npassword_file {password_file}\n"
    with Mosquitto(tmp_path / "broker", extra_config=config) as broker:
        proc, log = start_gateway(tmp_path, "--broker", f"127.0.0.1:{broker.port}",
                                  "--username", "gw", "--password-file", "gw-password")
        try:
            code = proc.wait(timeout=WAIT_S)
        finally:
            stop_process(proc)
    assert code == 1
    assert "refused client 'neoterra-gw-home': Not authorized" in log.read_text()


def test_demo_without_its_module_says_so(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "edge_gateway.demo", None)  # as if demo.py were absent
    assert main(["demo"]) == 1
    assert "the demo is not part of this installation" in capsys.readouterr().err


def test_unknown_arguments_are_usage_errors(tmp_path: Path) -> None:
    result = neoterra("nodes", "--verbose", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --verbose" in result.stderr



@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
    ("broker.local", BrokerAddress("broker.local", 1883)),
    ("[::1]:1884", BrokerAddress("::1", 1884)),
    ("::1", BrokerAddress("::1", 1883)),
])
def test_broker_addresses(text: str, address: BrokerAddress) -> None:
    assert parse_broker(text) == address


@pytest.mark.parametrize("text", ["host:", ":1883", "host:0", "host:65536", "[::1", "[::1]x"])
def test_bad_broker_addresses_explain_the_format(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|IPV6"):
        parse_broker(text)


def test_gaps_lists_what_was_never_stored(tmp_path: Path) -> None:
    from edge_gateway.gaps import GapTracker

    db = tmp_path / "neoterra.db"
    fill_store(db)
    result = neoterra("gaps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no gaps in neoterra.db")
    with Store(db) as store:
        tracker = GapTracker(store, settle_s=0)
        tracker.load()
        late = Telemetry("home", "bed-1", (Reading("bed-1", 5, T0, "pump", 1.0, T0),), T0)
        store.write([late])
        tracker.observe([late])
        tracker.check()
    result = neoterra("gaps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NODE", "SEQ", "COUNT", "CAUSE", "DETECTED", "STATE"]
    assert row.split()[:4] == ["bed-1", "2..4", "3", "lost"] and row.endswith("open")
    missing = neoterra("gaps", "--db", "missing.db", cwd=tmp_path)
    assert missing.returncode == 1 and "no database at missing.db" in missing.stderr
