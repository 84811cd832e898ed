"""Each node's desired config document, built from the gateway config and versioned by content.

The gateway publishes it retained on nt/<site>/<node>/config; the node applies it and reports
the version it runs, so the fleet registry can tell who is out of date. The version is a short
hash of the document's canonical JSON: the same config always gives the same version, so a
gateway restart with an unchanged file does not make every node re-apply it.

Document (JSON object):
    {"v": 1, "version": "<12 hex>", "node": "bed-1", "role": "garden",
     "plant": {"name": "tomatoes", "moisture_low_pct": 30.0, "moisture_high_pct": 45.0,
               "soak_s": 900, "max_run_s": 120, "daily_budget_l": 40.0,
               "flow_l_per_min": 2.0},          # only for a garden node with a plant
     "report_interval_s": 30}                   # only when configured
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from sensornode.protocol import PROTOCOL_VERSION

from edge_gateway.config import Config, NodeConfig

VERSION_HEX_DIGITS = 12  # 48 bits: a collision between two configs of one node is not a worry


@dataclass(frozen=True)
class DesiredNodeConfig:
    node: str
    version: str
    document: Mapping[str, Any]  # includes "version"

    def payload(self) -> bytes:
        return canonical_json(self.document)


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def config_version(document: Mapping[str, Any]) -> str:
    """Short hash of the document's canonical JSON, without any "version" field it has."""
    content = {key: value for key, value in document.items() if key != "version"}
    return hashlib.sha256(canonical_json(content)).hexdigest()[:VERSION_HEX_DIGITS]


def desired_node_config(config: Config, node: NodeConfig) -> DesiredNodeConfig:
    document: dict[str, Any] = {"v": PROTOCOL_VERSION, "node": node.name, "role": node.role}
    if node.plant is not None:
        document["plant"] = asdict(config.plants[node.plant])
    if node.report_interval_s is not None:
        document["report_interval_s"] = node.report_interval_s
    version = config_version(document)
    document["version"] = version
    return DesiredNodeConfig(node.name, version, MappingProxyType(document))


def desired_node_configs(config: Config) -> dict[str, DesiredNodeConfig]:
    """Every configured node's desired config, by node name."""
    return {name: desired_node_config(config, node) for name, node in config.nodes.items()}
