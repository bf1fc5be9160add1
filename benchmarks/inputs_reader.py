"""Throughput of the Personalize reader next to a bare ``orjson.loads`` loop over the same files.

`make bench` prints the result; the reader should stay within ~1.3x of the bare loop.
"""

from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

import orjson

from calm_mail.inputs.personalize import SUFFIXES, iter_recommendations
from calm_mail.inputs.sources import list_prefix, open_source
from calm_mail.records import SkipCounter


def bench_reader(path_prefix: str, *, known_items: Container[str] | None = None) -> dict[str, Any]:
    """Time both loops once over every part under `path_prefix` (bare loop first), in CPU
    seconds of this process (the machine may be shared; budgets are per core).

    MB/s counts decompressed bytes. Returns users, lines, MB, seconds, users/s and MB/s of
    each loop, and ``ratio`` = reader seconds / bare seconds.
    """
    parts = list_prefix(path_prefix, SUFFIXES)
    lines = size = 0
    started = time.process_time()
    for part in parts:
        with open_source(part) as stream:
            for raw in stream:
                orjson.loads(raw)
                lines += 1
                size += len(raw)
    bare = time.process_time() - started
    skips = SkipCounter()
    started = time.process_time()
    users = sum(1 for _ in iter_recommendations(path_prefix, skips=skips, known_items=known_items))
    reader = time.process_time() - started
    mb = size / 1e6
    return {
        "parts": len(parts),
        "lines": lines,
        "users": users,
        "mb": round(mb, 1),
        "skipped": skips.skipped,
        "bare_s": round(bare, 3),
        "reader_s": round(reader, 3),
        "bare_users_per_s": round(lines / bare),
        "reader_users_per_s": round(users / reader),
        "bare_mb_per_s": round(mb / bare, 1),
        "reader_mb_per_s": round(mb / reader, 1),
        "ratio": round(reader / bare, 3),
    }
