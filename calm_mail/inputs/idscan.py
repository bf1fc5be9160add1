"""The ids of a wanted Personalize line, checked against the catalog and filtered by the rules'
first step in one pass (`IdScanner.scan`), and the usual shape of a line (`shape`).

Of the 500 ids of a line, the bench's rules keep ~17 after their first step, a plain set filter
(``only_new``: the items released this week). So the reader applies that filter while it checks
the ids against the catalog, and hands the rules only what they can keep, with the count of the
rest (`Recommendation.ahead`), which the rules book to that step.
Two versions of each that must agree (hypothesis tests hold them together):

- `idscan.c`, the extension module ``_idscan`` when built: one walk of the array's bytes and
  one hash-table look-up per id, no Python object but the kept ids (the catalog's own
  strings); measured on the bench's lines, ~6 µs a line of 500 ids against ~33 µs for the
  Python version. Its shape check costs ~0.5 µs a line against ~2.2 µs.
- the Python versions (orjson, `frozenset.issuperset`, `filter`; personalize.py's `_shape`),
  used when the module is not built, when ``CALM_MAIL_NATIVE=0`` is set, and for any array
  the C walk does not call plain.

`python -m calm_mail.native` compiles the C file with ``$CC`` (default ``cc``) next to this
module as ``_idscan-<hash of the source><this Python's extension suffix>``; `make` runs it. The
name carries the source's hash and the Python it was built for, so an edited C file or another
Python never loads an old build: the loader only opens the one built from the source it sits
beside, for the Python that runs.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sysconfig
import tempfile
from array import array
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

SOURCE = Path(__file__).with_name("idscan.c")
ABI = 2


def library_path(folder: Path | None = None) -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return (folder or SOURCE.parent) / f"_idscan-{digest}{suffix}"


def build(folder: Path | None = None) -> Path:
    """Compile `idscan.c` into `library_path(folder)` (nothing to do when it is there)."""
    target = library_path(folder)
    if target.exists():
        return target
    for old in target.parent.glob("_idscan-*.so"):  # built from an older source
        old.unlink(missing_ok=True)
    compiler = os.environ.get("CC", "cc")
    include = sysconfig.get_paths()["include"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        cmd = [compiler, "-O2", "-shared", "-fPIC", f"-I{include}", "-o", str(built), str(SOURCE)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        built.replace(target)  # atomic: a concurrent build or load sees all or nothing
    return target


def load(path: Path | None = None) -> ModuleType | None:
    """The built module, or None when it is not there, is switched off, or is not this ABI."""
    if path is None:
        if switched_off():
            return None
        path = library_path()
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_idscan", path)
    if spec is None or spec.loader is None:
        return None
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module if getattr(module, "ABI", None) == ABI else None


_MODULE: ModuleType | None = None
_LOADED = False


def native() -> ModuleType | None:
    """The module this process uses (loaded once)."""
    global _MODULE, _LOADED
    if not _LOADED:
        _MODULE, _LOADED = load(), True
    return _MODULE


def all_known(known: frozenset[str], items: list[Any]) -> bool:
    """Every one of `items` is in `known` (False for an unhashable junk value)."""
    try:
        return known.issuperset(items)
    except TypeError:  # a list or an object among the ids
        return False


def switched_off() -> bool:
    return os.environ.get("CALM_MAIL_NATIVE", "1") == "0"


def scan_note(module: ModuleType | None, off: bool) -> str:
    """What `calm-mail validate` says about the id scan a plan will use."""
    if module is not None:
        return "plan id scan: in C (the built module)"
    why = (
        "CALM_MAIL_NATIVE=0 switches the C module off"
        if off
        else "the C module is not built: run `python -m calm_mail.native`, or `make`"
    )
    return f"plan id scan: in Python, ~35% more CPU time per plan ({why})"


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
        self, known: frozenset[str], keep: frozenset[str], module: ModuleType | None = None
    ) -> None:
        self.known = known
        self.keep = keep
        self._module = module
        self._table: Any = None
        if module is not None:
            self._table = self._build_table(module, known, keep)

    @property
    def is_native(self) -> bool:
        return self._table is not None

    @staticmethod
    def _build_table(module: ModuleType, known: Iterable[str], keep: frozenset[str]) -> Any:
        names: list[str] = []
        encoded: list[bytes] = []
        for item_id in known:
            raw = _plain(item_id)
            if raw is not None:  # an id JSON escapes is never matched raw: Python reads it
                names.append(item_id)
                encoded.append(raw)
        offsets = array("q", [0])
        for raw in encoded:
            offsets.append(offsets[-1] + len(raw))
        flags = bytes(1 if name in keep else 0 for name in names)
        return module.table(b"".join(encoded), offsets.tobytes(), flags, tuple(names))

    def walk(self, raw: bytes, start: int, end: int) -> int:
        """What the C walk alone makes of ``raw[start:end]``: the number of ids, or -1 (not a
        compact array of plain strings), -2 (an id the table lacks), -3 (too many kept)."""
        assert self._module is not None, "no C module"
        return int(self._module.walk(self._table, raw, start, end))

    def scan(self, raw: bytes, start: int, end: int) -> tuple[tuple[str, ...], int] | None:
        """(the kept ids in order, how many ids) of ``raw[start:end]``, a JSON array of ids all
        in `known`; None for anything else (not a non-empty array of strings, an unknown id),
        which the caller reads in full. Always what `scan_python` returns."""
        if self._table is not None:
            found: tuple[tuple[str, ...], int] | None = self._module.scan(  # type: ignore[union-attr]
                self._table, raw, start, end
            )
            if found is not None:
                return found
        # not plain, an id the table lacks (unknown, or escaped), too many kept: the Python way
        return self.scan_python(raw, start, end)

    def scan_python(self, raw: bytes, start: int, end: int) -> tuple[tuple[str, ...], int] | None:
        """The Python version of `scan`, which the C one must agree with."""
        try:
            ids = orjson.loads(memoryview(raw)[start:end])
        except orjson.JSONDecodeError:
            return None
        if type(ids) is not list or not ids or not all_known(self.known, ids):
            return None
        if self.keep is self.known:  # everything known is kept
            return tuple(ids), len(ids)
        return tuple(filter(self.keep.__contains__, ids)), len(ids)


def build_or_explain() -> tuple[Path | None, str]:
    """Build the module (`python -m calm_mail.native`): its path, or None and why not."""
    try:
        return build(), ""
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, str(getattr(exc, "stderr", "") or exc).strip()
