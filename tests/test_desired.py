"""The node's reading of the gateway's desired config: one document, checked as a whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sensornode import config, desired

PLANT = {"name": "veg", "moisture_low_pct": 30, "moisture_high_pct": 45, "soak_s": 600,
         "max_run_s": 120, "daily_budget_l": 20, "flow_l_per_min": 2}


def doc(**fields: Any) -> bytes:
    base = {"v": 1, "version": "0123456789ab", "node": "bed-1", "role": "garden",
            "plant": PLANT, "report_interval_s": 30}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_a_plant_profile_becomes_the_autonomy_profile() -> None:
    version, overrides = desired.overrides_from(doc(), "bed-1", "garden")
    assert version == "0123456789ab"
    assert overrides["report_interval_s"] == 30
    profile = overrides["autonomy"]
    assert (profile["name"], profile["moisture_low"], profile["moisture_high"],
            profile["budget_l_per_day"]) == ("veg", 30, 45, 20)


@pytest.mark.parametrize(("payload", "field"), [
    (b"{", "config: not JSON"),
    (doc(node="bed-2"), "config.node"),
    (doc(role="drone"), "config.role"),
    (doc(version=""), "config.version"),
    (doc(report_interval_s=0), "config.report_interval_s"),
    (doc(plant=dict(PLANT, moisture_high_pct=10)), "config.plant.moisture_high"),
    (doc(plant={k: v for k, v in PLANT.items() if k != "soak_s"}), "config.plant.soak_s"),
])
def test_a_document_this_node_cannot_use_is_refused_by_field(payload: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        desired.overrides_from(payload, "bed-1", "garden")


def test_a_drone_takes_no_plant() -> None:
    with pytest.raises(ValueError, match=r"config\.plant"):
        desired.overrides_from(doc(role="drone"), "bed-1", "drone")


def test_the_saved_config_is_merged_at_boot_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    root = f"{tmp_path}/"
    (tmp_path / "config.json").write_text(json.dumps({"node": "bed-1", "report_interval_s": 10}))
    assert config.load(root + "config.json")["config_version"] == ""
    version, overrides = desired.overrides_from(doc(), "bed-1", "garden")
    desired.save(root, version, overrides)
    cfg = config.load(root + "config.json")
    assert (cfg["config_version"], cfg["report_interval_s"]) == (version, 30)
    assert cfg["autonomy"]["name"] == "veg"
    desired.save(root, "badbadbadbad", {"report_interval_s": "often"})
    cfg = config.load(root + "config.json")
    assert (cfg["config_version"], cfg["report_interval_s"]) == ("", 10)
