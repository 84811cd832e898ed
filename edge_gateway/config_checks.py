"""Typed reading of TOML tables for the gateway config, collecting every mistake.

A `Table` reads one TOML table. Each getter checks type and range; a bad or missing value is
recorded as a `ConfigError` (dotted key, problem, fix) on the shared `Problems` and a fallback of
the right type is returned, so parsing carries on and the user sees every mistake in the file
at once. Cross-field checks ask `problems.ok(key, ...)` first, so a key already reported is not
reported again as a consequence.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from sensornode import protocol

from edge_gateway.configerror import ConfigError


class ConfigErrors(ValueError):
    """Every problem found in one config file; `errors` lists them in the order checked."""

    def __init__(self, errors: Iterable[ConfigError], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        count = len(self.errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{where}{count} problem{'s' if count != 1 else ''}:\n{lines}")


class Problems:
    """The errors found so far, and the keys they are about."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir  # relative paths in the file are relative to its directory
        self.errors: list[ConfigError] = []
        self._failed: set[str] = set()

    def add(self, key: str, problem: str, fix: str) -> None:
        self.errors.append(ConfigError(key, problem, fix))
        self._failed.add(key)

    def ok(self, *keys: str) -> bool:
        """True when none of these keys (nor anything under them) has been reported."""
        return not any(
            failed == key or failed.startswith(key + ".") for key in keys for failed in self._failed
        )


def suggestion(name: str, known: Collection[str]) -> str:
    """"did you mean 'x'? " when a known name is close to `name`, else ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def describe(value: object) -> str:
    kinds = {str: "text", bool: "true/false", int: "a whole number", float: "a number",
             list: "a list", dict: "a table"}
    kind = next((label for cls, label in kinds.items() if type(value) is cls), None)
    shown = str(value).lower() if isinstance(value, bool) else repr(value)  # as TOML writes it
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} ({kind})" if kind else f"{shown} ({type(value).__name__})"


class Table:
    """One TOML table at dotted path `key`; unknown keys are reported on construction."""

    def __init__(self, problems: Problems, key: str, value: object,
                 known: Collection[str]) -> None:
        self.problems = problems
        self.key = key
        self.values: Mapping[str, Any] = {}
        if not isinstance(value, dict):
            problems.add(key, f"must be a table, got {describe(value)}",
                         f"write it as a [{key}] section")
            return
        self.values = value
        kind, where = ("section", "") if not key else ("key", f" in [{key}]")
        for name in value:
            if name not in known:
                problems.add(self.path(name), f"unknown {kind}",
                             f"{suggestion(name, known)}known {kind}s{where}: "
                             f"{', '.join(sorted(known))}")

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def has(self, name: str) -> bool:
        return name in self.values

    def _missing(self, name: str, example: str) -> None:
        self.problems.add(self.path(name), "missing", f"add {name} = {example} to [{self.key}]")

    def text(self, name: str, default: str | None = None, example: str = '"..."',
             max_len: int = 256) -> str:
        if name not in self.values:
            if default is None:
                self._missing(name, example)
                return ""
            return default
        value = self.values[name]
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            self.problems.add(self.path(name), f"must be non-empty text of at most {max_len} "
                              f"characters, got {describe(value)}",
                              f"write e.g. {name} = {example}")
            return default or ""
        return value

    def optional_text(self, name: str, example: str = '"..."') -> str | None:
        return self.text(name, example=example) if name in self.values else None

    def name(self, name: str, default: str | None = None) -> str:
        """A site/node/profile name as the wire protocol allows it."""
        value = self.text(name, default, example='"my-garden"')
        if self.problems.ok(self.path(name)) and not protocol.valid_name(value):
            self.problems.add(self.path(name), f"{value!r} is not a valid name",
                              "use 1-32 characters of a-z, 0-9, '-' or '_'")
        return value

    def choice(self, name: str, options: Collection[str], default: str | None = None) -> str:
        value = self.text(name, default, example=repr(next(iter(options))).replace("'", '"'))
        if self.problems.ok(self.path(name)) and value not in options:
            self.problems.add(self.path(name), f"{value!r} is not one of {', '.join(options)}",
                              f"{suggestion(value, options)}use one of {', '.join(options)}")
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        if name not in self.values:
            if default is None:
                self._missing(name, str(low))
                return low
            return default
        value = self.values[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            example = low if default is None else default
            self.problems.add(self.path(name), f"must be a whole number from {low} to {high}, "
                              f"got {describe(value)}", f"write e.g. {name} = {example}")
            return low if default is None else default
        return value

    def optional_integer(self, name: str, low: int, high: int) -> int | None:
        return self.integer(name, low, high) if name in self.values else None

    def number(self, name: str, low: float, high: float, default: float | None = None,
               above_low: bool = False) -> float:
        """A float (TOML 45 and 45.0 alike); `above_low` excludes `low` itself."""
        if name not in self.values:
            if default is None:
                self._missing(name, f"{low:g}")
                return low
            return default
        value = self.values[name]
        bad_type = isinstance(value, bool) or not isinstance(value, int | float)
        if bad_type or not math.isfinite(value) or not low <= value <= high or (
                above_low and value == low):
            bound = "above" if above_low else "from"
            self.problems.add(self.path(name), f"must be a number {bound} {low:g} to {high:g}, "
                              f"got {describe(value)}",
                              f"write e.g. {name} = {default if default is not None else high:g}")
            return low if default is None else default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            self.problems.add(self.path(name), f"must be true or false, got {describe(value)}",
                              f"write {name} = true or {name} = false (no quotes)")
            return default
        return value

    def file(self, name: str, what: str) -> Path | None:
        """An existing regular file; relative paths are relative to the config file."""
        if name not in self.values:
            return None
        text = self.text(name, example=f'"{name.removesuffix("_file")}.txt"', max_len=4096)
        if not self.problems.ok(self.path(name)):
            return None
        path = self.problems.base_dir / Path(text).expanduser()
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            self.problems.add(self.path(name), f"{path} {state}",
                              f"create {what} there, or correct the path (relative paths start "
                              f"at the config file's directory, {self.problems.base_dir})")
            return None
        return path

    def subtable(self, name: str, known: Collection[str]) -> Table:
        return Table(self.problems, self.path(name), self.values.get(name, {}), known)

    def raw_table(self, name: str) -> dict[str, Any]:
        """A section parsed elsewhere: only checked to be a table."""
        value = self.values.get(name, {})
        if not isinstance(value, dict):
            self.problems.add(self.path(name), f"must be a table, got {describe(value)}",
                              f"write it as [{self.path(name)}.<name>] sections")
            return {}
        return value

    def named_tables(self, name: str) -> dict[str, Any]:
        """[name.<x>] sections: a table of tables whose keys are protocol names."""
        tables = self.raw_table(name)
        good: dict[str, Any] = {}
        for entry, value in tables.items():
            key = f"{self.path(name)}.{entry}"
            if not protocol.valid_name(entry):
                self.problems.add(key, f"{entry!r} is not a valid name",
                                  f"rename [{key}] using 1-32 characters of a-z, 0-9, '-' or '_'")
            elif not isinstance(value, dict):
                self.problems.add(key, f"must be a table, got {describe(value)}",
                                  f"write it as a [{key}] section")
            else:
                good[entry] = value
        return good
