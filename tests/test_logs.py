"""Structured logs: one JSON object per line with the extra fields, or text with key=value."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from edge_gateway.logs import setup_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


pytestmark = pytest.mark.usefixtures("restore_root_logger")


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_logs_one_object_per_line_with_extra_fields() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    log = logging.getLogger("edge_gateway.fleet")
    log.info("node %s is offline", "bed-1", extra={"node": "bed-1", "stale_s": 301.5})
    log.debug("not shown at INFO")
    log.warning("multi\nline")
    first, second = (json.loads(line) for line in lines(out))
    assert set(first) == {"ts", "level", "logger", "msg", "node", "stale_s"}
    assert (first["level"], first["logger"], first["msg"]) == (
        "INFO", "edge_gateway.fleet", "node bed-1 is offline")
    assert (first["node"], first["stale_s"]) == ("bed-1", 301.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    age = datetime.now().astimezone() - datetime.fromisoformat(first["ts"])
    assert abs(age.total_seconds()) < 60
    assert second["msg"] == "multi\nline"  # still one line of output


def test_json_logs_keep_tracebacks_and_survive_odd_extras() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "json", stream=out)
    log = logging.getLogger("t")
    try:
        raise RuntimeError("broken valve")
    except RuntimeError:
        log.exception("rule failed", extra={"rule": "dry_bed", "when": object(),
                                            "level_hint": {"a": [1, 2]}})
    entry = json.loads(out.getvalue())
    assert entry["level"] == "ERROR" and entry["rule"] == "dry_bed"
    assert "RuntimeError: broken valve" in entry["exc"]
    assert entry["when"].startswith("<object object at")
    assert entry["level_hint"] == {"a": [1, 2]}


def test_text_logs_append_extras_as_key_value() -> None:
    out = io.StringIO()
    setup_logging("info", "text", stream=out)
    logging.getLogger("edge_gateway.ingest").info("stored %d readings", 5,
                                                  extra={"node": "bed-1"})
    (line,) = lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO edge_gateway.ingest: "
                        r"stored 5 readings node=bed-1", line), line


def test_setting_up_again_replaces_the_handler_and_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "text", stream=first)
    setup_logging("WARNING", "json", stream=second)
    log = logging.getLogger("t")
    log.info("dropped")
    log.warning("kept")
    assert first.getvalue() == ""
    assert [json.loads(line)["msg"] for line in lines(second)] == ["kept"]
    assert len(logging.getLogger().handlers) == 1


@pytest.mark.parametrize(("level", "fmt", "words"), [
    ("LOUD", "text", "log level 'LOUD'"),
    ("INFO", "xml", "log format 'xml'"),
])
def test_bad_level_or_format_is_refused(level: str, fmt: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        setup_logging(level, fmt, stream=io.StringIO())
