"""``python -m calm_mail.native``: build the optional C part, the plan's id scan (`idscan`).

`make` runs this. Without a C compiler (or Python's headers) the plan still runs, reading the
ids in Python (slower: see README, "Performance"); this says so and exits 0.
"""

from __future__ import annotations

import sys

from calm_mail.inputs import idscan


def main() -> int:
    path, why = idscan.build_or_explain()
    if path is None:
        print(f"calm-mail: the id scan is not built ({why}); the plan reads ids in Python")
        return 0
    print(f"calm-mail: id scan {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
