"""Figures: one `BENCH <name> <value> <unit>` line each, and the JSON they are collected in."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BenchError(RuntimeError):
    """A benchmark could not produce its figures; the message says why."""


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    digits: int = 1
    note: str = ""

    def line(self) -> str:
        return f"BENCH {self.name} {self.value:.{self.digits}f} {self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {"value": round(self.value, self.digits), "unit": self.unit, "note": self.note}


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(figure.line(), flush=True)

    def as_json(self) -> dict[str, Any]:
        return {
            "figures": {f.name: f.as_json() for f in self.figures},
            "errors": self.errors,
            "env": self.env,
            "details": self.details,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_json(), indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
