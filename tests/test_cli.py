"""The `neoterra` command as users run it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sensornode.protocol import decode_estop

from edge_gateway.cli import main
from edge_gateway.config import load_config
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.settings import BrokerAddress, parse_broker
from edge_gateway.signing import KeyRing
from edge_gateway.store import Reading, Status, Store, Telemetry
from testkit.mosquitto import Mosquitto, free_port
from testkit.procs import stop_process, wait_for
from tests.test_commands import Script, ScriptedNode, answer_started
from tests.test_daemon import Watcher
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
    KeyRing(tmp_path / "keys").create("bed-1")  # ./keys, the default --keys
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

    KeyRing(tmp_path / "keys").create("drone-1")
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
    KeyRing(tmp_path / "keys").create("bed-1")
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


# ---- gateway config file: check-config and run --config ----------------------------------


def gateway_config(directory: Path, broker_port: int, extra: str = "",
                   storage_extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "gateway.toml"
    config.write_text(f'[site]\nname = "allotment"\n[broker]\nport = {broker_port}\n{extra}'
                      f'[storage]\npath = "state/gw.db"\n{storage_extra}'
                      '[nodes.bed-1]\nrole = "garden"\n[nodes.drone-1]\nrole = "drone"\n')
    (directory / "state").mkdir(exist_ok=True)
    return config


def test_check_config_prints_a_summary_of_a_good_file(tmp_path: Path) -> None:
    config = gateway_config(tmp_path / "etc", 1884)
    result = neoterra("gateway", "check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary, *nodes = result.stdout.splitlines()
    assert summary.startswith("ok: 2 nodes, 0 rules, 0 plant profiles, site allotment, broker "
                              "127.0.0.1:1884, database ")
    assert [line.split(":")[0] for line in nodes] == ["  bed-1", "  drone-1"]
    assert "config version" in nodes[0]


def test_check_config_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[site]\nname = "Allotment"\n[broker]\nprot = 1883\n'
                      '[nodes.bed-1]\nrole = "garden"\nplant = "kale"\n')
    result = neoterra("gateway", "check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert f"{config}: 4 problems:" in result.stderr
    for expected in ("site.name: 'Allotment' is not a valid name",
                     "broker.prot: unknown key; did you mean 'port'?",
                     "storage.path: missing; add path = ",
                     "nodes.bed-1.plant: no plant profile 'kale'; add a [plants.kale] section"):
        assert expected in result.stderr


def test_check_config_needs_the_file(tmp_path: Path) -> None:
    result = neoterra("gateway", "check-config", cwd=tmp_path)
    assert result.returncode == 2 and "--config" in result.stderr
    result = neoterra("gateway", "check-config", "--config", "absent.toml", cwd=tmp_path)
    assert result.returncode == 1 and "absent.toml: cannot be read" in result.stderr


def test_gateway_run_takes_broker_site_and_database_from_the_config(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path / "etc", mosquitto.port)
    # The environment would point elsewhere: with --config, the file decides.
    env = clean_env(NEOTERRA_BROKER=f"127.0.0.1:{free_port()}", NEOTERRA_SITE="other",
                    NEOTERRA_DB=str(tmp_path / "env.db"))
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_gateway", "gateway", "run",
                                 "--config", str(config), "--log-format", "json"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    node = FakeNode(mosquitto, "bed-1", site="allotment")
    try:
        node.birth()
        db = tmp_path / "etc" / "state" / "gw.db"  # relative to the config file, not the cwd
        wait_for(lambda: db.exists(), WAIT_S, "the gateway's database", proc=proc)
        with Store(db) as store:
            wait_for(lambda: [n.online for n in store.nodes()] == [True], WAIT_S,
                     "bed-1 online", proc=proc)
    finally:
        node.close()
        code = stop_process(proc)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert code == 0, entries
    assert not (tmp_path / "env.db").exists()
    assert {"ts", "level", "logger", "msg"} <= set(entries[0])
    assert any("node bed-1 is online" in e["msg"] for e in entries)
    assert any("shutting down" in e["msg"] for e in entries)


def test_gateway_run_uses_the_config_credentials_and_client_id(tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "gw", "right"],
                   check=True, capture_output=True, timeout=WAIT_S)
    broker_config = f"allow_anonymous false\npassword_file {password_file}\n"
    with Mosquitto(tmp_path / "broker", extra_config=broker_config) as broker:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "mqtt-password").write_text("wrong\n")
        config = gateway_config(tmp_path / "etc", broker.port,
                                'username = "gw"\npassword_file = "mqtt-password"\n'
                                'client_id = "gw-allotment-1"\n')
        proc, log = start_gateway(tmp_path, "--config", str(config))
        try:
            code = proc.wait(timeout=WAIT_S)
        finally:
            stop_process(proc)
    assert code == 1
    assert "refused client 'gw-allotment-1': Not authorized" in log.read_text()


def test_gateway_run_with_a_bad_config_starts_nothing(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 1883, 'host = ""\n')
    result = neoterra("gateway", "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "broker.host: must be non-empty text" in result.stderr
    assert not (tmp_path / "state" / "gw.db").exists()


def test_flags_override_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_gateway.cli import build_parser
    from edge_gateway.config_cli import run_settings

    monkeypatch.setenv("NEOTERRA_SITE", "from-env")
    (tmp_path / "flag-pw").write_text("flag-secret\n")
    (tmp_path / "mqtt-password").write_text("file-secret\n")
    config = gateway_config(tmp_path, 1884, 'username = "gw"\npassword_file = "mqtt-password"\n',
                            "batch_max_messages = 50\nbatch_max_ms = 250\n")

    def settings_for(*flags: str) -> tuple[object, ...]:
        args = build_parser().parse_args(["gateway", "run", "--config", str(config), *flags])
        run = run_settings(args)
        return (run.site, str(run.broker), run.db_path, run.username, run.password,
                run.batch_max, run.batch_linger_s)

    assert settings_for() == ("allotment", "127.0.0.1:1884", str(tmp_path / "state" / "gw.db"),
                              "gw", "file-secret", 50, 0.25)
    assert settings_for("--site", "east", "--broker", "10.0.0.5:1999", "--db", "x.db",
                        "--username", "ops", "--password-file", str(tmp_path / "flag-pw")) == (
        "east", "10.0.0.5:1999", "x.db", "ops", "flag-secret", 50, 0.25)
    # --username alone replaces the file's user and password: credentials go together
    assert settings_for("--username", "ops")[3:5] == ("ops", None)


def test_gateway_run_refuses_tls_it_cannot_do_yet(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = gateway_config(tmp_path, 8883, 'ca_file = "ca.pem"\n')
    check = neoterra("gateway", "check-config", "--config", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr  # a valid setting...
    result = neoterra("gateway", "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1  # ...that `run` will not silently drop
    assert "broker.ca_file: TLS to the broker is not supported" in result.stderr


def test_keygen_prints_a_new_key_once_and_irrigate_is_audited(mosquitto: Mosquitto,
                                                              tmp_path: Path) -> None:
    made = neoterra("keygen", "bed-1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key_hex = made.stdout.splitlines()[0]
    assert KeyRing(tmp_path / "keys").key("bed-1").hex() == key_hex
    again = neoterra("keygen", "bed-1", cwd=tmp_path)
    assert again.returncode == 1 and "bed-1 already has a key" in again.stderr
    node = ScriptedNode(mosquitto, "bed-1", answer_started)
    try:
        sent = neoterra("irrigate", "bed-1", "5", "--as", "rule:dry-bed", "--broker",
                        f"127.0.0.1:{mosquitto.port}", cwd=tmp_path)
    finally:
        node.close()
    assert sent.returncode == 0, sent.stderr
    listed = neoterra("audit", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "rule:dry-bed  bed-1  irrigate seconds=5  acked ok" in listed.stdout


# ---- site commands: estop, reset-estop, config push -------------------------------------------


def retained(broker: Mosquitto, topic_filter: str, count: int) -> dict[str, tuple[bytes, bool]]:
    """The retained messages on a filter, as a client subscribing now gets them."""
    watcher = Watcher(broker, topic_filter)
    try:
        wait_for(lambda: len(watcher.messages) >= count, WAIT_S, f"{count} retained messages")
        return {topic: found[-1] for topic, found in watcher.messages.items()}
    finally:
        watcher.close()


def test_estop_and_reset_estop_publish_the_retained_site_estop_and_are_audited(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = f"127.0.0.1:{mosquitto.port}"
    latched = neoterra("estop", "--reason", "hose burst", "--as", "ops", "--broker", broker,
                       "--site", "allotment", cwd=tmp_path)
    assert latched.returncode == 0, latched.stderr
    assert "site allotment: e-stop latched" in latched.stdout
    payload, was_retained = retained(mosquitto, "nt/allotment/estop", 1)["nt/allotment/estop"]
    estop = decode_estop(payload)
    assert was_retained and (estop["latched"], estop["by"], estop["reason"]) == (
        True, "ops", "hose burst")
    reset = neoterra("reset-estop", "--as", "ops", "--broker", broker, "--site", "allotment",
                     cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    payload, _ = retained(mosquitto, "nt/allotment/estop", 1)["nt/allotment/estop"]
    assert decode_estop(payload)["latched"] is False
    listed = neoterra("audit", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [
        "ops  *  estop reason=hose burst site=allotment  published (retained on "
        "nt/allotment/estop)",
        "ops  *  reset-estop site=allotment  published (retained on nt/allotment/estop)"]


def test_estop_without_a_broker_exits_1_and_the_audit_says_not_sent(tmp_path: Path) -> None:
    result = neoterra("estop", "--as", "ops", "--broker", f"127.0.0.1:{free_port()}",
                      cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot reach the MQTT broker" in result.stderr
    listed = neoterra("audit", cwd=tmp_path)
    assert "ops  *  estop site=home  not sent (cannot reach the MQTT broker" in listed.stdout


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--reason", "x" * 201],
                                  ["--as", "unknown"]])
def test_bad_estop_arguments_are_usage_errors_and_publish_nothing(tmp_path: Path,
                                                                  args: list[str]) -> None:
    result = neoterra("estop", *args, "--broker", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "(see neoterra estop --help)" in result.stderr
    assert not (tmp_path / "neoterra.db").exists()


def test_config_push_publishes_each_desired_config_retained(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    config = gateway_config(tmp_path / "etc", mosquitto.port)
    result = neoterra("config", "push", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    desired = desired_node_configs(load_config(config))
    assert result.stdout.splitlines() == [
        f"{name}: config version {desired[name].version} published on "
        f"nt/allotment/{name}/config" for name in ("bed-1", "drone-1")]
    found = retained(mosquitto, "nt/allotment/+/config", 2)
    assert found == {f"nt/allotment/{name}/config": (desired[name].payload(), True)
                     for name in ("bed-1", "drone-1")}


def test_config_push_with_a_bad_config_publishes_nothing(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 1883, 'host = ""\n')
    result = neoterra("config", "push", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "broker.host: must be non-empty text" in result.stderr


def test_gateway_run_with_local_hardware_off_a_pi_says_it_needs_one(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, free_port(), "[local_hardware.estop_button]\npin = 17\n")
    result = neoterra("gateway", "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "local_hardware: needs a Raspberry Pi's GPIO, but this is" in result.stderr
    assert not (tmp_path / "state" / "gw.db").exists()  # nothing was started
