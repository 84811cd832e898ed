"""Gateway TOML config: the shipped example, defaults, every check, errors collected, desired
node configs, and the systemd unit."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_gateway import config_cli
from edge_gateway.config import Config, load_config
from edge_gateway.config_checks import ConfigErrors
from edge_gateway.config_cli import full_check
from edge_gateway.config_desired import config_version, desired_node_configs
from edge_gateway.configerror import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "gateway.toml.example"
UNIT = REPO / "deploy" / "neoterra-gateway.service"
MINIMAL = '[site]\nname = "home"\n[storage]\npath = "db.sqlite"\n'
GARDEN = MINIMAL + """
[plants.tomatoes]
moisture_low_pct = 30
moisture_high_pct = 45
max_run_s = 120
daily_budget_l = 40
flow_l_per_min = 2.5

[nodes.bed-1]
role = "garden"
plant = "tomatoes"
"""


def minimal_except(snippet: str) -> str:
    """The minimal file's sections that the snippet does not write itself."""
    return "".join(section for section in ('[site]\nname = "home"\n',
                                           '[storage]\npath = "db.sqlite"\n')
                   if section.split("\n")[0] not in snippet)


def write(directory: Path, text: str, name: str = "gateway.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems(directory: Path, text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        load_config(write(directory, text))
    return info.value.errors


def install_example(directory: Path) -> Path:
    """The example as installed: next to the password and key files it names."""
    config = directory / "gateway.toml"
    shutil.copy(EXAMPLE, config)
    raw = tomllib.loads(EXAMPLE.read_text())
    (directory / raw["broker"]["password_file"]).write_text("s3cret\n")
    for node in raw["nodes"].values():
        key = directory / node["key_file"]
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text("00" * 32 + "\n")
    return config


def test_the_shipped_example_passes_the_checker(tmp_path: Path) -> None:
    config = full_check(install_example(tmp_path))
    assert config.site == "riverside"
    assert config.broker.username == "gateway" and config.broker.password == "s3cret"
    assert config.storage.path == Path("/var/lib/neoterra/neoterra.db")
    assert sorted(config.nodes) == ["bed-1", "bed-2", "drone-1"]
    bed = config.nodes["bed-1"]
    assert (bed.role, bed.board, bed.plant) == ("garden", "esp32_devkitc", "tomatoes")
    assert bed.key_file == tmp_path / "keys" / "bed-1.key"
    assert config.plants["herbs"].soak_s == 600  # the default, left out in the example
    assert config.homeassistant.enabled and config.homeassistant.prefix == "homeassistant"


def test_the_example_without_its_files_names_each_missing_one(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "gateway.toml")
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "gateway.toml")
    assert [e.key for e in info.value.errors] == [
        "broker.password_file", "nodes.bed-1.key_file", "nodes.bed-2.key_file",
        "nodes.drone-1.key_file"]
    assert "does not exist" in info.value.errors[0].problem


def test_defaults_fill_in_what_a_minimal_file_leaves_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 1883)
    assert config.broker.username is None and config.broker.password is None
    assert config.storage.path == tmp_path / "db.sqlite"  # relative to the file, not the cwd
    assert (config.storage.raw_retention_days, config.storage.hourly_retention_days) == (30, 365)
    assert dict(config.nodes) == {} and dict(config.rules_table) == {}
    assert (config.homeassistant.enabled, config.homeassistant.prefix) == (False,
                                                                          "homeassistant")
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GARDEN))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.site = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.nodes["bed-2"] = config.nodes["bed-1"]  # type: ignore[index]


def test_password_is_read_from_its_file_and_kept_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\r\n")
    config = load_config(write(tmp_path, MINIMAL + '[broker]\nusername = "gw"\n'
                                                   'password_file = "pw"\n'))
    assert config.broker.password == "hunter2"
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize(("snippet", "key", "words"), [
    ('[broker]\nport = "1883"', "broker.port", "whole number from 1 to 65535, got '1883' (text)"),
    ("[broker]\nport = 0", "broker.port", "from 1 to 65535"),
    ("[broker]\nport = 1883.0", "broker.port", "1883.0 (a number)"),
    ('[broker]\nhost = ""', "broker.host", "non-empty text"),
    ('[broker]\npassword = "x"', "broker.username", "a password needs a user name"),
    ('[broker]\nusername = "u"\npassword = "x"\npassword_file = "pw"', "broker.password",
     "both password and password_file"),
    ('[broker]\nclient_id = "two words"', "broker.client_id", "not a usable MQTT client id"),
    ('[broker]\nusername = "u"\npassword_file = "nope"', "broker.password_file",
     "does not exist"),
    ('[storage]\npath = "db"\nraw_retention_days = 0', "storage.raw_retention_days",
     "from 1 to 3650"),
    ('[storage]\npath = "db"\nraw_retention_days = 90\nhourly_retention_days = 30',
     "storage.hourly_retention_days", "shorter than raw_retention_days (90)"),
    ('[storage]\npath = "db"\nbatch_max_ms = true', "storage.batch_max_ms", "true (true/false)"),
    ('[storage]\npath = "keys"', "storage.path", "is a directory"),
    ('[site]\nname = "My Garden"', "site.name", "'My Garden' is not a valid name"),
    ("[homeassistant]\nenabled = 1", "homeassistant.enabled", "must be true or false"),
    ('[homeassistant]\nprefix = "ha/+/x"', "homeassistant.prefix", "not an MQTT topic prefix"),
    ('[homeassistant]\nprefix = "ha/"', "homeassistant.prefix", "not an MQTT topic prefix"),
    ("[http]\nport = 70000", "http.port", "from 1 to 65535"),
    ("rules = 3", "rules", "must be a table"),
    ("[nodes]\nbed-1 = 3", "nodes.bed-1", "must be a table"),
    ('[nodes.Bed_1]\nrole = "garden"', "nodes.Bed_1", "'Bed_1' is not a valid name"),
    ('[nodes.n]\nrole = "tractor"', "nodes.n.role", "'tractor' is not one of garden, drone"),
    ("[nodes.n]\nstale_after_s = 300", "nodes.n.role", "missing"),
    ('[nodes.n]\nrole = "drone"\nstale_after_s = 5', "nodes.n.stale_after_s", "from 10"),
    ('[nodes.n]\nrole = "drone"\nreport_interval_s = 100\nstale_after_s = 150',
     "nodes.n.stale_after_s", "less than two report intervals"),
    ('[nodes.n]\nrole = "drone"\nboard = "arduino"', "nodes.n.board", "no board profile"),
    ('[nodes.n]\nrole = "garden"\nplant = "roses"', "nodes.n.plant", "no plant profile 'roses'"),
    ('[nodes.n]\nrole = "drone"\nplant = "roses"', "nodes.n.plant", "no plants to water"),
    ('[nodes.n]\nrole = "garden"\nkey_file = "keys"', "nodes.n.key_file", "is not a file"),
    ("[plants.p]\nmoisture_low_pct = 40\nmoisture_high_pct = 40\nmax_run_s = 60\n"
     "daily_budget_l = 10\nflow_l_per_min = 1", "plants.p.moisture_high_pct",
     "40 is not above moisture_low_pct (40)"),
    ("[plants.p]\nmoisture_low_pct = 20\nmoisture_high_pct = 140\nmax_run_s = 60\n"
     "daily_budget_l = 10\nflow_l_per_min = 1", "plants.p.moisture_high_pct", "from 0 to 100"),
    ("[plants.p]\nmoisture_low_pct = 20\nmoisture_high_pct = 40\nmax_run_s = 60\n"
     "daily_budget_l = 10\nflow_l_per_min = 0", "plants.p.flow_l_per_min", "above 0"),
    ("[plants.p]\nmoisture_low_pct = 20\nmoisture_high_pct = 40\nmax_run_s = 600\n"
     "daily_budget_l = 10\nflow_l_per_min = 2", "plants.p.max_run_s",
     "one run of 600 s at 2 l/min uses 20 l, more than daily_budget_l (10)"),
    ("[plants.p]\nmoisture_low_pct = 20\nmoisture_high_pct = 40\nmax_run_s = 60\n"
     "daily_budget_l = nan\nflow_l_per_min = 2", "plants.p.daily_budget_l", "nan"),
    ("[plants.p]\nmoisture_low_pct = 20\nmoisture_high_pct = 40\nmax_run_s = 60\n"
     "flow_l_per_min = 2", "plants.p.daily_budget_l", "missing"),
])
def test_each_bad_value_is_named_with_its_key(tmp_path: Path, snippet: str, key: str,
                                              words: str) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "pw").write_text("x\n")
    found = problems(tmp_path, snippet + "\n" + minimal_except(snippet))
    assert [e.key for e in found] == [key], found
    assert words in found[0].problem and found[0].fix


@pytest.mark.parametrize(("snippet", "key", "hint"), [
    ('[broker]\npasword_file = "pw"', "broker.pasword_file", "did you mean 'password_file'?"),
    ('[nodes.n]\nrole = "garden"\nplnt = "x"', "nodes.n.plnt", "did you mean 'plant'?"),
    ("[homeasistant]\nenabled = true", "homeasistant", "did you mean 'homeassistant'?"),
    ('[nodes.n]\nrole = "gardn"', "nodes.n.role", "did you mean 'garden'?"),
    ('[nodes.n]\nrole = "drone"\nboard = "pico"', "nodes.n.board", "did you mean 'pico_w'?"),
])
def test_near_misses_get_a_did_you_mean(tmp_path: Path, snippet: str, key: str,
                                        hint: str) -> None:
    found = problems(tmp_path, MINIMAL + snippet + "\n")
    assert [e.key for e in found] == [key]
    assert hint in found[0].fix


def test_every_problem_in_the_file_is_reported_at_once(tmp_path: Path) -> None:
    text = """
[site]
name = "Home"
[broker]
port = -1
colour = "blue"
[storage]
[plants.p]
moisture_low_pct = 50
moisture_high_pct = 40
max_run_s = 60
daily_budget_l = 10
flow_l_per_min = 1
[nodes.a]
role = "garden"
plant = "q"
[nodes.b]
role = "submarine"
"""
    found = problems(tmp_path, text)
    assert [e.key for e in found] == [
        "site.name", "broker.colour", "broker.port", "storage.path",
        "plants.p.moisture_high_pct", "nodes.a.plant", "nodes.b.role"]
    report = str(ConfigErrors(found, "gateway.toml"))
    assert report.startswith("gateway.toml: 7 problems:\n  site.name: 'Home' is not")


def test_a_key_already_reported_is_not_reported_again_as_a_consequence(tmp_path: Path) -> None:
    text = MINIMAL + """
[plants.p]
moisture_low_pct = "low"
moisture_high_pct = 40
max_run_s = 60
daily_budget_l = 10
flow_l_per_min = 1
"""
    assert [e.key for e in problems(tmp_path, text)] == ["plants.p.moisture_low_pct"]


def test_an_unreadable_or_malformed_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.errors[0].key == str(tmp_path / "absent.toml")
    assert "cannot be read" in info.value.errors[0].problem
    found = problems(tmp_path, '[site]\nname = "home\n')
    assert len(found) == 1 and "not valid TOML" in found[0].problem
    assert "line 2" in found[0].problem


def test_rules_and_local_hardware_are_kept_raw(tmp_path: Path) -> None:
    text = MINIMAL + """
[rules.dry_bed]
when = {node = "bed-1", quantity = "soil_moisture", below = 30, for_s = 600}
[local_hardware]
estop_button = {pin = 17}
"""
    config = load_config(write(tmp_path, text))
    assert dict(config.rules_table) == {"dry_bed": {"when": {
        "node": "bed-1", "quantity": "soil_moisture", "below": 30, "for_s": 600}}}
    assert dict(config.local_hardware_table) == {"estop_button": {"pin": 17}}


def test_full_check_adds_the_problems_of_sections_other_modules_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[object, dict[str, object]]] = []

    def parse_rules(table: object, **context: object) -> None:
        seen.append((table, context))
        raise ConfigError("rules.dry_bed.when", "no trigger", "give below or above")

    monkeypatch.setattr(config_cli, "SECTION_PARSERS", tuple(
        (name, parse_rules if name == "rules" else parse, table_of, context)
        for name, parse, table_of, context in config_cli.SECTION_PARSERS))
    path = write(tmp_path, GARDEN + '[nodes.drone-1]\nrole = "drone"\n'
                                    "[rules.dry_bed]\nwhen = 1\n")
    assert load_config(path).rules_table["dry_bed"] == {"when": 1}  # load_config alone: raw
    with pytest.raises(ConfigErrors) as info:
        full_check(path)
    assert [str(e) for e in info.value.errors] == [
        "rules.dry_bed.when: no trigger; give below or above"]
    assert seen == [({"dry_bed": {"when": 1}}, {"known_nodes": {"bed-1", "drone-1"},
                                                "flow_l_per_min": {"bed-1": 2.5}})]


def test_full_check_runs_the_real_rule_and_local_hardware_parsers(tmp_path: Path) -> None:
    config = install_example(tmp_path)
    text = config.read_text()
    config.write_text(text.replace('action = { type = "irrigate", node = "bed-1"',
                                   'action = { type = "irrigate", node = "bed-9"')
                      .replace("pin = 27", "pin = 17"))
    with pytest.raises(ConfigErrors) as info:
        full_check(config)
    keys = [e.key for e in info.value.errors]
    assert len(keys) == 2
    assert keys[0].startswith("rules.water_bed_1") and "bed-9" in str(info.value.errors[0])
    assert keys[1].startswith("local_hardware")


def desired(tmp_path: Path, text: str) -> dict[str, tuple[str, dict[str, object]]]:
    config: Config = load_config(write(tmp_path, text))
    return {name: (d.version, json.loads(d.payload()))
            for name, d in desired_node_configs(config).items()}


def test_desired_node_config_holds_the_plant_profile_and_a_content_version(
    tmp_path: Path,
) -> None:
    text = GARDEN + '[nodes.drone-1]\nrole = "drone"\nreport_interval_s = 5\n'
    first = desired(tmp_path, text)
    version, document = first["bed-1"]
    assert document == {
        "v": 1, "version": version, "node": "bed-1", "role": "garden",
        "plant": {"name": "tomatoes", "moisture_low_pct": 30.0, "moisture_high_pct": 45.0,
                  "soak_s": 600, "max_run_s": 120, "daily_budget_l": 40.0,
                  "flow_l_per_min": 2.5},
    }
    assert first["drone-1"][1] == {"v": 1, "version": first["drone-1"][0], "node": "drone-1",
                                   "role": "drone", "report_interval_s": 5}
    assert len(version) == 12 and version == config_version(document)
    assert first == desired(tmp_path, text)  # unchanged file: unchanged versions
    # 30 and 30.0 are the same setting, and the same version
    assert desired(tmp_path, text.replace("= 30\n", "= 30.0\n")) == first
    changed = desired(tmp_path, text.replace("max_run_s = 120", "max_run_s = 90"))
    assert changed["bed-1"][0] != version
    assert changed["drone-1"] == first["drone-1"]


def test_desired_payload_is_canonical_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GARDEN))
    payload = desired_node_configs(config)["bed-1"].payload()
    document = json.loads(payload)
    assert payload == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "\nExecStart=neoterra gateway run --config /etc/neoterra/gateway.toml" in text
    # verify insists the command exists on this machine: point it at this checkout's script.
    neoterra = Path(sys.executable).parent / "neoterra"
    assert neoterra.is_file()
    unit = write(tmp_path, text.replace("ExecStart=neoterra ", f"ExecStart={neoterra} "),
                 "neoterra-gateway.service")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # ...and verify does catch a mistake in a unit like ours
    broken = write(tmp_path, unit.read_text().replace("ProtectSystem=strict",
                                                      "ProtectSystm=strict"),
                   "neoterra-gateway.service")
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert "Unknown key 'ProtectSystm'" in result.stderr


def test_systemd_unit_runs_as_its_own_user_with_gpio_and_i2c(tmp_path: Path) -> None:
    service: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            service.setdefault(key, []).append(value)
    assert service["Type"] == ["simple"] and service["Restart"] == ["on-failure"]
    assert service["User"] == ["neoterra"] and service["StateDirectory"] == ["neoterra"]
    assert service["SupplementaryGroups"] == ["gpio i2c"]
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    assert service["ExecStart"] == [
        "neoterra gateway run --config /etc/neoterra/gateway.toml --log-format json"]
