"""`make test` step: every firmware module must compile with mpy-cross (names the one that
does not); prints the size of the build."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_gateway.firmware_build import (  # noqa: E402
    FIRMWARE_DIR,
    BuildError,
    compile_tree,
)


def main(out_dir: Path) -> int:
    try:
        built = compile_tree(FIRMWARE_DIR, out_dir)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"mpy-cross: {len(built)} files, {sum(p.stat().st_size for p in built)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "mpy-check"))
