"""`mlgates` console script."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("mlgates: not implemented yet", file=sys.stderr)
    return 2
