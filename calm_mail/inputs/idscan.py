"""The ids of a wanted Personalize line, checked against the catalog and filtered by the rules'
first step in one pass: `IdScanner.scan`.

Of the 500 ids of a line, the bench's rules keep ~17 after their first step, a plain set filter
(``only_new``: the items released this week). So the reader applies that filter while it checks
the ids against the catalog, and hands the rules only what they can keep, with the count of the
rest (`Recommendation.ahead`), which the rules book to that step.
Two versions that must agree (a hypothesis test holds them together):

- `idscan.c`, loaded with ctypes when built: one walk of the array's bytes and one hash-table
  look-up per id, no Python object but the kept ids (the catalog's own strings). ~4 µs a line
  of 500 ids against ~35 µs for the Python version.
- the Python version (orjson, `frozenset.issuperset`, `filter`), used when the library is not
  built, when ``CALM_MAIL_NATIVE=0`` is set, and for any array the C walk does not call plain.

`python -m calm_mail.native` compiles the C file with ``$CC`` (default ``cc``) next to
this module as ``_idscan-<hash of the source>.so``; `make` runs it. The name carries the source's
hash, so an edited C file is never shadowed by an old library: the loader only opens the one
built from the source it sits beside.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import orjson

SOURCE = Path(__file__).with_name("idscan.c")
ABI = 1
# More kept ids than this in one line (a week that released most of the catalog) go the Python
# way: the output buffer stays small.
MAX_KEPT = 4096


def library_path(folder: Path | None = None) -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return (folder or SOURCE.parent) / f"_idscan-{digest}.so"


def build(folder: Path | None = None) -> Path:
    """Compile `idscan.c` into `library_path(folder)` (nothing to do when it is there)."""
    target = library_path(folder)
    if target.exists():
        return target
    for old in target.parent.glob("_idscan-*.so"):  # built from an older source
        old.unlink(missing_ok=True)
    compiler = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", str(built), str(SOURCE)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        built.replace(target)  # atomic: a concurrent build or load sees all or nothing
    return target


def load(path: Path | None = None) -> ctypes.CDLL | None:
    """The built library, or None when it is not there, is switched off, or is not this ABI."""
    if path is None:
        if os.environ.get("CALM_MAIL_NATIVE", "1") == "0":
            return None
        path = library_path()
    if not path.exists():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    lib.idscan_abi.restype = ctypes.c_int64
    if lib.idscan_abi() != ABI:
        return None
    lib.idscan_new.restype = ctypes.c_void_p
    lib.idscan_new.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int64,
        ctypes.c_char_p,
    ]
    lib.idscan_free.argtypes = [ctypes.c_void_p]
    lib.idscan_hash.restype = ctypes.c_uint64
    lib.idscan_hash.argtypes = [ctypes.c_char_p, ctypes.c_int64]
    lib.idscan_scan.restype = ctypes.c_int64
    lib.idscan_scan.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_int64,
    ]
    return lib


_LIB: ctypes.CDLL | None = None
_LOADED = False


def native() -> ctypes.CDLL | None:
    """The library this process uses (loaded once)."""
    global _LIB, _LOADED
    if not _LOADED:
        _LIB, _LOADED = load(), True
    return _LIB


def _plain(item_id: str) -> bytes | None:
    """The UTF-8 bytes a compact JSON array holds for `item_id` unescaped, or None when JSON
    must escape it (a quote, a backslash, a control character) or it cannot be encoded."""
    if '"' in item_id or "\\" in item_id or any(ord(c) < 0x20 for c in item_id):
        return None
    try:
        return item_id.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return None


class IdScanner:
    """Checks a line's ids against `known` and keeps, in order, those in `keep`."""

    def __init__(
        self, known: frozenset[str], keep: frozenset[str], lib: ctypes.CDLL | None = None
    ) -> None:
        self.known = known
        self.keep = keep
        self._lib = lib
        self._table: int | None = None
        if lib is not None:
            self._build_table(lib, known, keep)

    @property
    def is_native(self) -> bool:
        return self._table is not None

    def _build_table(self, lib: ctypes.CDLL, known: Iterable[str], keep: frozenset[str]) -> None:
        names: list[str] = []
        encoded: list[bytes] = []
        for item_id in known:
            raw = _plain(item_id)
            if raw is not None:  # an id JSON escapes is never matched raw: the full path reads it
                names.append(item_id)
                encoded.append(raw)
        offsets = (ctypes.c_int64 * (len(encoded) + 1))()
        at = 0
        for k, raw in enumerate(encoded):
            offsets[k] = at
            at += len(raw)
        offsets[len(encoded)] = at
        flags = bytes(1 if name in keep else 0 for name in names)
        table = lib.idscan_new(b"".join(encoded), offsets, len(encoded), flags)
        if not table:
            raise MemoryError("idscan: no memory for the catalog's table")
        self._names = names
        self._out = (ctypes.c_int32 * (MAX_KEPT + 1))()
        self._scan = lib.idscan_scan
        self._table = table

    def __del__(self) -> None:
        if self._table is not None and self._lib is not None:
            self._lib.idscan_free(self._table)
            self._table = None

    def scan(self, raw: bytes, start: int, end: int) -> tuple[list[str], int] | None:
        """(the kept ids in order, how many ids) of ``raw[start:end]``, a JSON array of ids all
        in `known`; None for anything else (not a non-empty array of strings, an unknown id),
        which the caller reads in full. Always what `scan_python` returns."""
        if self._table is not None:
            total = self._scan(self._table, raw, start, end, self._out, MAX_KEPT)
            if total > 0:
                out = self._out
                names = self._names
                return [names[k] for k in out[1 : out[0] + 1]], total
        # not plain, an id the table lacks (unknown, or escaped), too many kept: the Python way
        return self.scan_python(raw, start, end)

    def scan_python(self, raw: bytes, start: int, end: int) -> tuple[list[str], int] | None:
        """The Python version of `scan`, which the C one must agree with."""
        try:
            ids = orjson.loads(memoryview(raw)[start:end])
        except orjson.JSONDecodeError:
            return None
        if type(ids) is not list or not ids or not self.known.issuperset(ids):
            return None
        return list(filter(self.keep.__contains__, ids)), len(ids)
