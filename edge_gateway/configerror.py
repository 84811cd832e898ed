"""The one error type for a bad gateway configuration value.

Every check of the gateway's TOML file (and of the sections other modules parse from it:
rules, plant profiles, local hardware, Home Assistant) raises this, so `neoterra gateway
check-config` and the daemon's start-up print the same kind of message: which key, what is
wrong with it, and how to fix it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key}: {problem}; {fix}")
        self.key = key  # dotted path in the TOML file, e.g. "rules.dry_bed.threshold"
        self.problem = problem
        self.fix = fix
