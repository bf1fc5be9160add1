"""The Amazon Personalize batch-inference output: ``*.out`` JSON Lines part files under a prefix.

Each line looks like::

    {"input":{"userId":"4638"},"output":{"recommendedItems":["63992",...],"scores":[0.01,...]},
     "error":null}

Lines are streamed one at a time (memory does not grow with the files; only the set of user ids
already seen does, to drop duplicates). A line is parsed with simdjson, which validates the
whole line without building Python objects. When the planner passes ``wanted`` (the users whose
email is built from Personalize: eligible and in a personalize arm), lines in the usual shape
(`_shape`: Personalize's compact form, ``"error":null`` last, a plain user id) take two short
cuts: another user's line comes back as ``Recommendation(unread=True)`` without a parse, and
a wanted user's line read without scores has only its ids read (`_scanned`), which costs less
than the parse and leaves the 500 scores unparsed. A valid JSON
line in the usual shape is one the full parse finds well formed; what the short cuts leave
unchecked is a broken part (a corrupt byte among the ids or the scores) that nobody reads:
the ids of a line no email uses, the scores when no one asked for them. Every other line is
parsed in full, and ``calm-mail validate`` parses the first lines of every part. The planner
also passes ``keep``, the set its rules' first step keeps (``only_new``): a wanted line's ids
are then checked against the catalog and filtered by it in one pass (`idscan`, in C when
built), and the record carries only the kept ids and the count of the others (``ahead``).
The shape check runs in C too when the module is built (`_shape_function`). Measured on
the bench's 200,000 × 500 data (36% of users wanted), in instructions on the 20k data (the
machine is too noisy for 5% in time): the shape check costs ~1 µs a line against ~10 µs for a
parse, and takes the plan from 15.6 to 14.2 G instructions; the orjson read of a wanted
line, 222k against 356k instructions, takes it to 13.3 G.
A full read (every line's items and scores) reads a line in the usual shape
whole when every byte of it is fixed text or one of its two arrays (`_usual_full`): the ids
through the C scan (or orjson), the scores by orjson. That gives what the full parse gives, in
0.8× the time of the bare orjson parse of the same files (simdjson's parse took 1.6×: it is
slower than orjson when every value has to become a Python object).

A line that cannot be used is counted in a `SkipCounter` by reason, with its ``file:line``, and
never stops the run:

``bad_json``         not JSON, or not a JSON object
``error_line``       ``error`` is not null
``missing_output``   ``output`` or its ``recommendedItems`` list is missing or not a list
``empty_output``     ``recommendedItems`` is empty
``missing_user_id``  ``input.userId`` is missing or empty
``bad_items``        an item id is not a string (only checked without ``known_items``)
``unknown_items``    no item id is in the catalog (a line that keeps one known id is used, and
                     the ids dropped from it are counted apart: ``SkipCounter.unknown_ids``)
``duplicate_user``   a user already seen in an earlier well-formed line or part: the first line
                     wins, even when none of its items could be used

The two item reasons can only be found on lines whose items are read; with ``wanted`` the
counter's ``items_checked`` says how many those were, and the bad share rates them over it.
JSON that simdjson refuses and orjson would take is counted as ``bad_json``: integers beyond 64
bits, nesting deeper than 1,024. On a duplicated key the first value counts.

`check_recommendation_quality` then decides whether the edition may go on: a few unknown ids
are retired content (dropped, counted, named in the plan's warnings); many mean the catalog and
the output do not belong together.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

import orjson
import simdjson

from calm_mail.errors import InputError
from calm_mail.inputs.idscan import IdScanner, native
from calm_mail.inputs.idscan import all_known as _all_known
from calm_mail.inputs.sources import READ_ERRORS, list_prefix, open_source, read_error
from calm_mail.records import Recommendation, SkipCounter

SUFFIXES = (".out", ".out.gz")


def iter_recommendations(
    prefix: str,
    *,
    skips: SkipCounter,
    known_items: Container[str] | None = None,
    wanted: Container[str] | None = None,
    scores: bool = True,
    keep: frozenset[str] | None = None,
    unfiltered: Container[str] = (),
) -> Iterator[Recommendation]:
    """Stream the usable lines of every ``*.out``/``*.out.gz`` part under `prefix`, in order.

    With `wanted`, only those users' items are read and checked; another user's good line
    comes back as ``Recommendation(user_id, item_ids=(), unread=True)``. ``scores=False``
    leaves ``Recommendation.scores`` None (the planner ranks by position; reading 500 floats
    costs about as much as reading the 500 ids).
    With `keep` (the rules' first step's set, `BoundRules.prefilter`), `known_items` and
    ``scores=False``, a wanted line keeps only the ids in `keep`, in order, and says in
    ``Recommendation.ahead`` how many others it had (`idscan`); the users in `unfiltered` (the
    ones a trace explains) get their whole list.
    Raises `InputError` when the prefix holds no part file or a part cannot be read.
    `skips.seen()` is called once per non-blank line.
    """
    parts = list_prefix(prefix, SUFFIXES)
    if not parts:
        raise InputError(
            f"no Personalize output ({', '.join('*' + s for s in SUFFIXES)}) under this prefix",
            path=prefix,
        )
    known = _as_set(known_items)
    users: set[str] = set()
    if wanted is not None and skips.items_checked is None:
        skips.items_checked = 0
    whole = filtered = None
    if isinstance(known, frozenset):
        whole = IdScanner(known, known, native())  # a usual line's ids, every known one kept
        if keep is not None and wanted is not None and not scores:
            filtered = IdScanner(known, keep, native())
    for part in parts:
        yield from _read_part(
            part, skips, known, users, wanted, scores, whole, filtered, unfiltered
        )


def _as_set(known: Container[str] | None) -> Container[str] | None:
    """A frozenset for the fast ``issuperset`` check, when the container can be iterated."""
    if known is None or isinstance(known, set | frozenset):
        return known
    if isinstance(known, Iterable):
        return frozenset(known)
    return known


# What pysimdjson raises for a line it cannot parse: bad JSON (ValueError), invalid UTF-8
# (UnicodeDecodeError), numbers beyond 64 bits or nesting too deep (RuntimeError).
_PARSE_ERRORS = (ValueError, RuntimeError, UnicodeDecodeError)
_BLANK = "blank"
# What `at_pointer` raises when the path is not there or runs through a non-object.
_POINTER_ERRORS = (KeyError, TypeError, ValueError, IndexError)


def _read_part(
    part: str,
    skips: SkipCounter,
    known: Any,
    users: set[str],
    wanted: Container[str] | None,
    with_scores: bool,
    whole: IdScanner | None,
    filtered: IdScanner | None,
    unfiltered: Container[str],
) -> Iterator[Recommendation]:
    # One parser per part, reused for every line: simdjson keeps its buffers. A parser may only
    # parse again once the proxies of the last document are gone; `_line` keeps them local.
    parser = simdjson.Parser()
    fast = isinstance(known, frozenset | set)
    want: Container[str] = () if wanted is None else wanted
    # lines in the usual shape read the short way: their ids (`_scanned`), or whole (`_usual_full`)
    read_full = with_scores and (known is None or whole is not None)
    shape_of = _shape_function()
    with open_source(part) as stream:
        lineno = 0
        try:
            for lineno, raw in enumerate(stream, 1):
                shape = shape_of(raw) if wanted is not None or read_full else None
                if wanted is not None and shape is not None and shape[0] not in want:
                    # the usual line of a user no email reads: its shape is enough
                    skips.seen()
                    if shape[0] in users:
                        skips.add("duplicate_user", f"{part}:{lineno}")
                    else:
                        users.add(shape[0])
                        yield Recommendation(user_id=shape[0], item_ids=(), unread=True)
                    continue
                rec = None
                if shape is not None and whole is not None and not with_scores:
                    scanner = whole
                    if filtered is not None and shape[0] not in unfiltered:
                        scanner = filtered  # the rules' first set filter, ahead
                    rec = _scanned(raw, shape, scanner)
                elif shape is not None and read_full:
                    rec = _usual_full(raw, shape, whole)
                dropped: tuple[str, ...] = ()
                if rec is not None:  # the usual line, its ids all known, read the short way
                    reason, user_id = None, rec.user_id
                else:
                    reason, rec, user_id, dropped = _line(
                        parser, raw, known, fast, wanted, with_scores
                    )
                if reason is _BLANK:
                    continue
                skips.seen()
                if user_id is not None:  # a well-formed line: the user's first one wins
                    if user_id in users:
                        reason, rec = "duplicate_user", None
                    else:
                        users.add(user_id)
                        if wanted is not None and (rec is None or not rec.unread):
                            skips.items_checked = (skips.items_checked or 0) + 1
                        if dropped or (known is not None and rec is not None and not rec.unread):
                            read = len(rec.item_ids) + rec.ahead if rec else 0
                            skips.items_read += len(dropped) + read
                            skips.unknown_ids.update(dropped)
                if reason is not None:
                    skips.add(reason, f"{part}:{lineno}")
                if rec is not None:
                    yield rec
        except READ_ERRORS as exc:
            raise read_error(exc, f"{part}:{lineno + 1}") from exc


# The usual shape of a good line, as Personalize writes it (compact JSON, keys in this order)
_HEAD = b'{"input":{"userId":"'
_MIDDLE = b'"},"output":{"recommendedItems":["'
_ERROR = b'"error"'
_SCORES = b',"scores"'
_TAIL = b'},"error":null}'


def _shape_function() -> Callable[[bytes], tuple[str, int] | None]:
    """`_shape` in C when the module is built (`idscan`: ~0.5 against ~2.2 µs a line)."""
    module = native()
    return module.shape if module is not None else _shape


def _shape(raw: bytes) -> tuple[str, int] | None:
    """(the user id, where the ids' array ends) of a line in the usual shape, else None. The
    end is the index just past the array's ``]``, or -1 when another key follows it. Costs
    ~1 µs against ~10 µs for the parse of a 500-item line.

    The usual shape: ``{"input":{"userId":"ID"},"output":{"recommendedItems":["...`` at the
    start, ``},"error":null}`` at the end, no other ``"error":`` in between, and ``ID``
    printable ASCII with no quote or backslash. A valid JSON line in that shape is one the full
    parse finds well formed, with that user id: its only ``error`` key is the last one, which is
    null. (A key is found by its colon: outside strings, a colon follows a key. A colon inside a
    string is taken for one too, and only sends the line to the full parse.) The ids' array
    ends at the first key after it, ``scores`` or the last ``error``, when a ``]`` is right
    before that key. What this does not check is that the middle is valid JSON; see the
    module's docstring.
    """
    if not raw.startswith(_HEAD):
        return None
    quote = raw.find(b'"', len(_HEAD))
    end = _content_end(raw)
    if quote <= len(_HEAD) or not raw.startswith(_MIDDLE, quote):
        return None
    last = end - len(_TAIL) + 2 + len(_ERROR)  # the colon of the last "error"
    if not raw.endswith(_TAIL, quote, end):
        return None
    colon = raw.find(b":", quote + len(_MIDDLE))  # memchr: ~0.1 µs per 5 KB
    items_end = -1
    if colon == last:
        items_end = end - len(_TAIL)
    elif raw.endswith(_SCORES, 0, colon):
        items_end = colon - len(_SCORES)
    while colon != last:  # "scores", any other key but "error"
        if colon < 0 or raw.endswith(_ERROR, 0, colon):
            return None
        colon = raw.find(b":", colon + 1)
    user_id = raw[len(_HEAD) : quote]
    if not user_id.isascii():
        return None
    text = user_id.decode()
    if not text.isprintable() or "\\" in text:
        return None
    return text, (items_end if raw[items_end - 1] == _CLOSE else -1)


_CLOSE = ord("]")


def _ids_span(shape: tuple[str, int]) -> tuple[str, int, int] | None:
    """(the user id, the ids' ``[``, just past their ``]``) of a line in the usual shape, or
    None when another key than ``scores`` follows the ids (the full parse reads that line)."""
    user_id, items_end = shape
    if items_end < 0:
        return None
    return user_id, len(_HEAD) + len(user_id) + len(_MIDDLE) - 2, items_end  # the id is ASCII


def _content_end(raw: bytes) -> int:
    """Where the line's text ends, before its ``\n`` or ``\r\n``."""
    return len(raw) - (2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0)


def _scanned(raw: bytes, shape: tuple[str, int], scanner: IdScanner) -> Any:
    """The record of a line in the usual shape whose ids are all known, read without its scores
    by `scanner` (`IdScanner.scan`: the C walk, or orjson in place), which keeps the ids of the
    rules' first set filter, or all of them; None for any other line, which the full parse
    reads as it reads every line.

    Why: either way the 500 ids cost less than simdjson's parse and `as_list` (orjson alone:
    222k against 356k instructions a line), and the scores' 500 floats are not parsed at all.
    """
    span = _ids_span(shape)
    found = None if span is None else scanner.scan(raw, span[1], span[2])
    if found is None:
        return None
    kept, total = found
    return Recommendation(user_id=shape[0], item_ids=kept, ahead=total - len(kept))


_SCORES_AT = b',"scores":['


def _usual_full(raw: bytes, shape: tuple[str, int], scanner: IdScanner | None) -> Any:
    """The record of a line in the usual shape read whole: its ids (checked against the
    catalog by `scanner` when there is one), and its scores when the ``scores`` array comes
    right after them and runs up to the line's tail. None for any other line, which the full
    parse reads.

    Every byte of such a line is read: the head, the middle and the tail are fixed text, the
    user id is checked by `_shape`, and the two arrays are parsed. So this gives what the full
    parse gives (a hypothesis test holds the two together). Why: orjson and the C id scan take
    ~0.6 of the time of simdjson's parse and `as_list` over 500 ids and 500 scores.
    """
    span = _ids_span(shape)
    if span is None:
        return None
    user_id, start, items_end = span
    close = _content_end(raw) - len(_TAIL)  # the "}" that closes "output"
    numbers: Any = None
    if items_end != close:
        at = items_end + len(_SCORES_AT) - 1  # the scores' "["
        if not raw.startswith(_SCORES_AT, items_end) or raw.find(b"]", at) != close - 1:
            return None
        try:
            numbers = orjson.loads(memoryview(raw)[at:close])
        except orjson.JSONDecodeError:
            return None
    if scanner is not None:
        found = scanner.scan(raw, start, items_end)
        if found is None:  # an unknown id, or not plain: the full parse drops and counts it
            return None
        ids = found[0]
    else:
        try:
            items = orjson.loads(memoryview(raw)[start:items_end])
        except orjson.JSONDecodeError:
            return None
        if not items or not _all_strings(items):
            return None
        ids = tuple(items)
    scores = None if numbers is None else _numbers(numbers, len(ids))
    return Recommendation(user_id=user_id, item_ids=ids, scores=scores)


def _line(
    parser: simdjson.Parser,
    raw: bytes,
    known: Any,
    fast: bool,
    wanted: Container[str] | None,
    with_scores: bool = True,
) -> tuple[str | None, Recommendation | None, str | None, tuple[str, ...]]:
    """(skip reason or None, the record or None, the user id when the line is well formed,
    the ids dropped from the record because the catalog does not know them)."""
    try:
        doc = parser.parse(raw)
    except _PARSE_ERRORS:
        return (_BLANK if not raw.strip() else "bad_json"), None, None, ()
    if type(doc) is not simdjson.Object:
        return "bad_json", None, None, ()
    if doc.get("error") is not None:
        return "error_line", None, None, ()
    try:  # one C-level walk each, instead of a proxy per level
        items = doc.at_pointer("/output/recommendedItems")
    except _POINTER_ERRORS:
        return "missing_output", None, None, ()
    if type(items) is not simdjson.Array:
        return "missing_output", None, None, ()
    n = len(items)
    if not n:
        return "empty_output", None, None, ()
    try:
        user_id = _user_id(doc.at_pointer("/input/userId"))
    except _POINTER_ERRORS:
        return "missing_user_id", None, None, ()
    if not user_id:
        return "missing_user_id", None, None, ()
    if wanted is not None and user_id not in wanted:
        return None, Recommendation(user_id=user_id, item_ids=(), unread=True), user_id, ()
    try:
        ids: list[Any] = items.as_list()
        scores = _scores(_at(doc, "/output/scores"), n) if with_scores else None
    except _PARSE_ERRORS:
        return "bad_items", None, user_id, ()
    if known is None:
        if not _all_strings(ids):
            return "bad_items", None, user_id, ()
        rec = Recommendation(user_id=user_id, item_ids=tuple(ids), scores=scores)
        return None, rec, user_id, ()
    if fast and _all_known(known, ids):
        rec = Recommendation(user_id=user_id, item_ids=tuple(ids), scores=scores)
        return None, rec, user_id, ()
    reason, usable, dropped = _drop_unknown(user_id, ids, scores, known)
    return reason, usable, user_id, dropped


def _at(doc: simdjson.Object, pointer: str) -> Any:
    try:
        return doc.at_pointer(pointer)
    except _POINTER_ERRORS:
        return None


def _user_id(user_id: Any) -> str | None:
    if type(user_id) is int:
        return str(user_id)
    return user_id if type(user_id) is str else None


def _scores(value: Any, n: int) -> tuple[float, ...] | None:
    if type(value) is not simdjson.Array or len(value) != n:
        return None
    return _numbers(value.as_list(), n)


def _numbers(numbers: Any, n: int) -> tuple[float, ...] | None:
    """`numbers` as the scores of `n` items, or None: not a list of `n` numbers."""
    if type(numbers) is not list or len(numbers) != n:
        return None
    try:
        sum(numbers)  # one C-level pass that rejects non-numbers
    except TypeError:
        return None
    return tuple(numbers)


def _all_strings(items: list[Any]) -> bool:
    try:
        "".join(items)  # one C-level pass that rejects non-strings
    except TypeError:
        return False
    return True


def _drop_unknown(
    user_id: str, items: list[Any], scores: tuple[float, ...] | None, known: Container[str]
) -> tuple[str | None, Recommendation | None, tuple[str, ...]]:
    """Drop the ids the catalog does not know (retired content, most often). The line stays
    usable while one id is left. Also returns the dropped ids (a junk value as its repr)."""
    keep = [i for i, item in enumerate(items) if type(item) is str and item in known]
    if len(keep) == len(items):
        return None, Recommendation(user_id=user_id, item_ids=tuple(items), scores=scores), ()
    kept = set(keep)
    dropped = tuple(
        item if type(item) is str else _junk(item) for i, item in enumerate(items) if i not in kept
    )
    if not keep:
        return "unknown_items", None, dropped
    rec = Recommendation(
        user_id=user_id,
        item_ids=tuple(items[i] for i in keep),
        scores=None if scores is None else tuple(scores[i] for i in keep),
    )
    return None, rec, dropped


def _junk(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def check_recommendation_quality(
    skips: SkipCounter,
    *,
    covered_users: int,
    audience_size: int,
    max_bad_share: float,
    min_coverage: float,
    source: str,
    max_unknown_share: float = 1.0,
    catalog: str = "the catalog",
) -> None:
    """Stop the edition (raise `InputError`) when the Personalize output is not fit to use.

    Unknown items first: the share of the item ids read that `catalog` does not know, against
    `max_unknown_share`. A few retired items are normal (they are dropped and counted); a large
    share means the catalog and the output do not belong together.
    Bad lines are every line `skips` counted, whatever the reason (a line counts once); item
    problems found on part of the lines are rated over that part (`SkipCounter.share`).
    Coverage is ``covered_users / audience_size``. The limits are inclusive: a share equal to
    its maximum, or a coverage equal to `min_coverage`, passes.
    """
    if skips.total == 0:
        raise InputError("the Personalize output has no lines", path=source)
    check_unknown_items(skips, max_share=max_unknown_share, catalog=catalog, source=source)
    share = skips.share()
    if share > max_bad_share:
        raise InputError(
            f"{_bad_lines(skips)} ({share:.2%}) are bad, more than the allowed "
            f"{max_bad_share:.2%} (inputs.max_bad_share): {_reasons(skips)}",
            path=source,
        )
    coverage = covered_users / audience_size if audience_size else 1.0
    if coverage < min_coverage:
        raise InputError(
            f"the Personalize output covers {covered_users:,} of {audience_size:,} users "
            f"({coverage:.1%}), less than the required {min_coverage:.1%} "
            "(inputs.min_coverage); was the batch job run on the whole audience?",
            path=source,
        )


def _bad_lines(skips: SkipCounter) -> str:
    if skips.items_checked is None:
        return f"{skips.skipped:,} of {skips.total:,} Personalize lines"
    items = skips.item_skips
    return (
        f"{skips.skipped - items:,} of {skips.total:,} Personalize lines by their structure and "
        f"{items:,} of the {skips.items_checked:,} whose items were read"
    )


def _reasons(skips: SkipCounter) -> str:
    parts = []
    for reason, n in skips.counts.most_common():
        first = skips.examples.get(reason, [])
        parts.append(f"{reason} {n:,}" + (f" (first at {first[0]})" if first else ""))
    return "; ".join(parts)


def check_unknown_items(
    skips: SkipCounter, *, max_share: float, catalog: str, source: str, read: str = "read"
) -> None:
    """Raise `InputError` when more than `max_share` of the item ids read are not in
    `catalog`: then the catalog and the output do not belong together. `read` says which ids
    were read, for the message."""
    if skips.unknown_share() > max_share:
        raise InputError(
            f"{unknown_share_text(skips, read, catalog)}, more than the allowed {max_share:.2%} "
            f"(inputs.max_unknown_item_share): {unknown_ids_text(skips)}; is it the catalog "
            "this output was made from?",
            path=source,
        )


def unknown_share_text(skips: SkipCounter, read: str, catalog: str = "the catalog") -> str:
    """``501 of the 10,000 recommended item ids read (5.01%) are not in the catalog``: the
    plan's warning, `validate`'s note and the quality gate say it alike."""
    return (
        f"{skips.unknown_dropped:,} of the {skips.items_read:,} recommended item ids {read} "
        f"({skips.unknown_share():.2%}) are not in {catalog}"
    )


def unknown_ids_text(skips: SkipCounter, shown: int = 3) -> str:
    """``12 distinct ids, most often 63992 (×410), 1187 (×95), 28 (×3)``."""
    top = ", ".join(f"{item} (×{n:,})" for item, n in skips.top_unknown(shown))
    more = ", ..." if len(skips.unknown_ids) > shown else ""
    return f"{len(skips.unknown_ids):,} distinct id(s), most often {top}{more}"
