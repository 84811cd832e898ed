"""Helpers for the flash outbox's tests (sensornode.outbox): sample records, the segment files
on disk, a log of the outbox's file I/O (io_log), and a check that a test leaves no file
outside its tmp dirs (no_stray_files). Fixtures: import them into the test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sensornode import outbox as outbox_module
from sensornode.outbox import Outbox

Record = tuple[int, int, bytes]
ALL = (10**6, 10**9)  # peek arguments that return everything


def rec(seq: int, size: int = 20, kind: int = 1) -> Record:
    return kind, seq, bytes((seq * 7 + i) % 256 for i in range(size))


def recs(first: int, count: int, size: int = 20) -> list[Record]:
    return [rec(s, size) for s in range(first, first + count)]


def peek_all(ob: Outbox) -> list[Record]:
    return ob.peek(*ALL)


def seg_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"), key=lambda p: int(p.stem))


def on_flash(directory: Path) -> int:
    return sum(p.stat().st_size for p in seg_files(directory))


class CountingFile:
    def __init__(self, f: Any, log: list[tuple[str, int]]) -> None:
        self._f, self._log = f, log

    def write(self, data: Any) -> Any:
        self._log.append(("write", len(data)))
        return self._f.write(data)

    def flush(self) -> None:
        self._log.append(("flush", 0))
        self._f.flush()

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)
        self._log.append(("read", len(data)))
        return data

    def readinto(self, buf: Any) -> Any:
        got = self._f.readinto(buf)
        self._log.append(("read", got))
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.fixture
def io_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    log: list[tuple[str, int]] = []

    def counting_open(path: str, mode: str = "r") -> CountingFile:
        return CountingFile(open(path, mode), log)

    monkeypatch.setattr(outbox_module, "open", counting_open, raising=False)
    return log


@pytest.fixture(autouse=True)
def no_stray_files() -> Iterator[None]:
    cwd = set(os.listdir("."))
    yield
    assert set(os.listdir(".")) == cwd  # everything lives in tmp dirs
