"""The C id scan (`idscan.c`) against its Python version, on plain arrays and on junk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from calm_mail.inputs import idscan
from calm_mail.inputs.idscan import IdScanner
from calm_mail.inputs.personalize import _shape

from .conftest import FRAGMENTS, line

# Catalog ids as they come: short and long (one 8-byte word and more; two that share their
# first 8 bytes), non-ASCII, and ids JSON must escape (kept out of the C table)
CATALOG = [
    "1",
    "42",
    "93586",
    "calm-07",  # 7 and 8 bytes: the closing quote inside and just past the first word
    "sleep-08",
    "meditation-0001",
    "meditation-0002",
    "sleepstory-ünïcode",
    "雨の音",
    'say "om"',
    "back\\slash",
    "tab\there",
    "",
]
KEEP = frozenset(["42", "meditation-0002", "雨の音", 'say "om"', ""])


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The module built from this tree's C file, into a folder of the test's own."""
    if shutil.which(os.environ.get("CC", "cc")) is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler in CI: the plan's id scan cannot be built")
        pytest.skip("no C compiler")
    folder = tmp_path_factory.mktemp("idscan")
    loaded = idscan.load(idscan.build(folder))
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def scanner(lib: ModuleType) -> IdScanner:
    found = IdScanner(frozenset(CATALOG), KEEP, lib)
    assert found.is_native
    return found


def raw_scan(scanner: IdScanner, raw: bytes) -> int:
    """What the C walk itself makes of the whole of `raw`."""
    return scanner.walk(raw, 0, len(raw))


def array(ids: list[str]) -> bytes:
    return orjson.dumps(ids)


plain_ids = st.sampled_from([i for i in CATALOG if idscan._plain(i) is not None])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(plain_ids, min_size=1, max_size=40))
def test_a_plain_array_of_known_ids_is_read_in_c_as_python_reads_it(
    scanner: IdScanner, ids: list[str]
) -> None:
    raw = array(ids)
    assert raw_scan(scanner, raw) == len(ids)  # the C walk took it, no fallback
    found = scanner.scan(raw, 0, len(raw))
    assert found == scanner.scan_python(raw, 0, len(raw))
    assert found == (tuple(i for i in ids if i in KEEP), len(ids))


junk_bytes = st.sampled_from([b" ", b",", b'"', b"\\", b"]", b"[", b"\x00", b"\n", b"\xff", b"x"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ids=st.lists(st.sampled_from(CATALOG) | st.text(max_size=12), min_size=0, max_size=12),
    cut=st.integers(min_value=0, max_value=400),
    junk=junk_bytes,
    start=st.integers(min_value=0, max_value=3),
)
@example(ids=["42"], cut=0, junk=b" ", start=0)
@example(ids=["42", "1"], cut=5, junk=b" ", start=0)  # whitespace: valid JSON, not plain
@example(ids=['say "om"', "42"], cut=0, junk=b"", start=0)  # an escaped id: read by Python
def test_on_any_bytes_the_c_scan_and_the_python_version_agree(
    scanner: IdScanner, ids: list[str], cut: int, junk: bytes, start: int
) -> None:
    raw = array(ids)
    cut = min(cut, len(raw))
    raw = raw[:cut] + junk + raw[cut:]
    start = min(start, len(raw))
    assert scanner.scan(raw, start, len(raw)) == scanner.scan_python(raw, start, len(raw))


@pytest.mark.parametrize(
    ("raw", "returns"),
    [
        (b'["42","1"]', 2),
        (b'["42", "1"]', -1),  # whitespace
        (b'["\\u0034\\u0032"]', -2),  # an escape: "\u0034\u0032" is in no table
        (b"[]", -1),  # empty: the full parse counts it
        (b'["42",]', -1),
        (b'["42""1"]', -1),
        (b'["42"', -1),
        (b'"42"]', -1),
        (b'["42"]x', -1),
        (b'["4\x012"]', -2),  # a control character: in no table either
        (b'["42","nope"]', -2),  # unknown: the full path drops and counts it
        (b'["meditation-0003"]', -2),  # shares its first 8 bytes with two known ids
        (b'["meditation-000"]', -2),
        (b'["\xe9"]', -2),  # not UTF-8: never a catalog id
        (b'[""]', 1),
        (b'["calm-07","sleep-08","1"]', 3),
        (b'["x\\"","42"]', -2),  # an escaped quote: the walk stops at "x\\", in no table
        (b'["42\\",\\"1"]', -2),  # one string, 42","1, not two ids
        (b'[""42""]', -1),
        (b'["42",[7]]', -1),  # not all strings: orjson reads it, the set check must not fail
        (b'["42",{"a":1}]', -1),
        (b'["a\\\\"]', -2),
    ],
)
def test_what_the_c_walk_takes_and_what_it_hands_back(
    scanner: IdScanner, raw: bytes, returns: int
) -> None:
    assert raw_scan(scanner, raw) == returns
    assert scanner.scan(raw, 0, len(raw)) == scanner.scan_python(raw, 0, len(raw))


def test_more_kept_ids_than_the_buffer_holds_go_the_python_way(
    scanner: IdScanner, lib: ModuleType
) -> None:
    ids = ["42", "1"] * (lib.MAX_KEPT + 3)
    raw = array(ids)
    assert raw_scan(scanner, raw) == -3
    assert scanner.scan(raw, 0, len(raw)) == (("42",) * (lib.MAX_KEPT + 3), len(ids))


def test_the_kept_ids_are_the_catalogs_own_strings(scanner: IdScanner) -> None:
    """Their hashes are already worked out: the rules' look-ups that follow cost less."""
    raw = array(["meditation-0002", "42"])
    found = scanner.scan(raw, 0, len(raw))
    assert found is not None
    own = {i: i for i in scanner.known}
    assert found[0] == ("meditation-0002", "42") and all(k is own[k] for k in found[0])


def test_an_offset_slice_of_a_longer_line_is_scanned(scanner: IdScanner) -> None:
    raw = b'{"x":["42","1"],"y":["meditation-0002"]}'
    start = raw.index(b"[")
    assert scanner.scan(raw, start, raw.index(b"]") + 1) == (("42",), 2)
    later = raw.index(b"[", start + 1)
    assert scanner.scan(raw, later, len(raw) - 1) == (("meditation-0002",), 1)
    with pytest.raises(IndexError):
        scanner.walk(raw, 5, len(raw) + 1)  # never read past the bytes


def test_the_module_is_named_by_its_source_and_this_python(tmp_path: Path) -> None:
    """An edited C file, or another Python, never loads a module built from an older one."""
    import importlib.machinery

    first = idscan.library_path(tmp_path)
    assert first.parent == tmp_path and first.name.startswith("_idscan-")
    assert first.name.endswith(importlib.machinery.EXTENSION_SUFFIXES[0])
    assert idscan.load(tmp_path / "_idscan-000000000000.so") is None  # not built: no module


def test_the_library_make_builds_is_the_one_the_plan_loads() -> None:
    """`make` builds it next to the module; in CI the plan must run the C scan."""
    if idscan.native() is None:
        if os.environ.get("CI") and os.environ.get("CALM_MAIL_NATIVE", "1") != "0":
            pytest.fail(f"{idscan.library_path().name} is not built: run `make install`")
        pytest.skip("the id scan module is not built, or CALM_MAIL_NATIVE=0 switches it off")
    assert idscan.library_path().exists()


M64 = (1 << 64) - 1


def _hash(raw: bytes) -> int:
    """`hash` of idscan.c, to aim a collision (checked against the C one below)."""
    h = 0x9E3779B97F4A7C15 ^ len(raw)
    while True:
        word = int.from_bytes(raw[:8].ljust(8, b"\0"), "little")
        h = ((h ^ word) * 0xFF51AFD7ED558CCD) & M64
        h ^= h >> 32
        if len(raw) <= 8:
            return h
        raw = raw[8:]


def _step(h: int, word: int) -> int:
    h = ((h ^ word) * 0xFF51AFD7ED558CCD) & M64
    return h ^ (h >> 32)


def _colliding(known: bytes) -> bytes:
    """A 24-byte plain id, not `known`, with `known`'s first 8 bytes and its hash: its second
    word differs, and its third is the one that brings the hash back (the xor before each
    multiply makes that word unique; some second word gives one with only plain ASCII)."""
    words = [int.from_bytes(known[k : k + 8], "little") for k in (0, 8, 16)]
    first = _step(0x9E3779B97F4A7C15 ^ 24, words[0])
    target = _step(first, words[1])
    for n in range(1_000_000):
        second = f"{n:07d}"[::-1].encode() + b"k"  # the digit that changes most in the low byte
        mid = _step(first, int.from_bytes(second, "little"))
        third = (mid ^ target ^ words[2]).to_bytes(8, "little")
        if all(0x20 <= b < 0x7F and b not in b'"\\' for b in third):
            return known[:8] + second + third
    raise AssertionError("no plain colliding id found")


def test_two_ids_with_one_hash_and_one_head_are_told_apart_by_their_bytes(
    lib: ModuleType,
) -> None:
    known = b"meditation-sleep-0000001"  # 24 bytes: three words
    other = _colliding(known)
    assert other != known and other[:8] == known[:8] and len(other) == 24
    assert lib.hash(known) == _hash(known) == _hash(other) == lib.hash(other)
    scanner = IdScanner(frozenset([known.decode()]), frozenset([known.decode()]), lib)
    assert raw_scan(scanner, b'["' + known + b'"]') == 1
    assert raw_scan(scanner, b'["' + other + b'"]') == -2  # same hash and head, not the same id
    assert scanner.scan(b'["' + other + b'"]', 0, 28) is None


# --------------------------------------------------------------------------- the line's shape


@settings(max_examples=1500, deadline=None)
@given(
    user=st.text(max_size=6),
    items=st.lists(st.sampled_from(["i1", "i2", "zz"]), max_size=3),
    scores=st.booleans(),
    cuts=st.lists(st.tuples(st.integers(0, 10**6), FRAGMENTS), max_size=3),
    tail=st.sampled_from([b"\n", b"\r\n", b"", b"x"]),
)
def test_the_c_shape_is_the_python_shape(
    lib: ModuleType,
    user: str,
    items: list[str],
    scores: bool,
    cuts: list[tuple[int, bytes]],
    tail: bytes,
) -> None:
    raw = line(user, items, [0.5] * len(items) if scores else None)
    for at, fragment in cuts:
        at %= len(raw) + 1
        raw = raw[:at] + fragment + raw[at:]
    raw = raw.removesuffix(b"\n") + tail
    assert lib.shape(raw) == _shape(raw)
    half = raw[: len(raw) // 2]
    assert lib.shape(half) == _shape(half)


def test_the_c_shape_on_usual_short_and_empty_lines(lib: ModuleType) -> None:
    usual = line("u1", ["i1"], [0.5])
    assert lib.shape(usual) == _shape(usual) == ("u1", usual.index(b',"scores"'))
    for raw in [b"", b"\n", b"{", b'{"input":{"userId":"', b'{"input":{"userId":""']:
        assert lib.shape(raw) is None and _shape(raw) is None
