"""Node config: defaults, whole-config validation, errors that name the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sensornode import config

GOOD: dict[str, Any] = {
    "site": "home",
    "node": "bed-1",
    "broker": {"host": "10.0.0.2", "port": 1884},
}


def test_defaults_fill_in_missing_fields() -> None:
    cfg = config.validate(GOOD)
    assert cfg["broker"]["port"] == 1884
    assert cfg["broker"]["keepalive_s"] == config.DEFAULTS["broker"]["keepalive_s"]
    assert cfg["report_interval_s"] == 10 and cfg["role"] == "garden"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"node": ""}, "node: '' is not a valid name"),
        ({"role": "tractor"}, "role: must be one of garden, drone"),
        ({"broker": {"port": "1883"}}, "broker.port: must be a whole number from 1 to 65535"),
        ({"broker": {"port": 70000}}, "broker.port"),
        ({"broker": "localhost"}, "broker: must be an object"),
        ({"brokr": {}}, "brokr: unknown field"),
        ({"report_interval_s": 0}, "report_interval_s: must be a whole number from 1"),
        (
            {"soil": {"dry_raw": 20000, "wet_raw": 30000}},
            "soil.dry_raw: must be above soil.wet_raw",
        ),
        ({"irrigation": {"max_run_s": True}}, "irrigation.max_run_s"),
    ],
)
def test_bad_field_is_named(patch: dict[str, Any], message: str) -> None:
    given = {**GOOD, **patch}
    with pytest.raises(config.ConfigError) as info:
        config.validate(given)
    assert message in str(info.value)


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(config.ConfigError) as info:
        config.validate({"node": "Bad Name", "broker": {"port": 0}, "report_interval_s": -1})
    text = str(info.value)
    assert "node:" in text and "broker.port:" in text and "report_interval_s:" in text


def test_load_reports_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "config.json"
    with pytest.raises(config.ConfigError, match="cannot be read"):
        config.load(str(missing))
    missing.write_text("{oops")
    with pytest.raises(config.ConfigError, match="not valid JSON"):
        config.load(str(missing))
    missing.write_text(json.dumps(GOOD))
    assert config.load(str(missing))["node"] == "bed-1"


def test_defaults_are_not_shared_between_loads() -> None:
    first = config.validate(GOOD)
    first["broker"]["host"] = "changed"
    assert config.validate(GOOD)["broker"]["host"] == "10.0.0.2"
    assert config.DEFAULTS["broker"]["host"] == "127.0.0.1"
