"""The gateway's log output: readable text for a terminal, or one JSON object per line.

JSON lines carry ts (UTC, ISO 8601 with milliseconds), level, logger, msg, every `extra={...}`
field given to the logging call, and exc (the traceback) when there is one, so journald,
Loki or jq can filter on them (e.g. `jq 'select(.node == "bed-1")'`). Text lines append the
extra fields as key=value.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)  # an extra never hides one of the fields above
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=repr: an extra that JSON cannot hold is shown, never an error in logging.
        return json.dumps(entry, ensure_ascii=False, default=repr)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        extras = extra_fields(record)
        if extras:
            text += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return text


def setup_logging(level: str | int = "INFO", fmt: str = "text",
                  stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at `level` or above to `stream` (stderr) in `fmt`.

    Replaces the root logger's handlers, so calling it again switches format or level; returns
    the handler installed. Raises ValueError for an unknown level or format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        level = level.upper()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
