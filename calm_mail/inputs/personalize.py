"""The Amazon Personalize batch-inference output: ``*.out`` JSON Lines part files under a prefix.

Each line looks like::

    {"input":{"userId":"4638"},"output":{"recommendedItems":["63992",...],"scores":[0.01,...]},
     "error":null}

Lines are streamed one at a time (memory does not grow with the files; only the set of user ids
already seen does, to drop duplicates) and parsed with orjson. A usual line (`_usual`: an
object, ``error`` null, a string user id, a non-empty list of ids all known) becomes a
`Recommendation` at once; any other line takes the strict path (`_odd`), which finds why it
cannot be used, or drops the ids the catalog does not know. The scores are not kept: the plan
ranks by position.

A line that cannot be used is counted in a `SkipCounter` by reason, with its ``file:line``, and
never stops the run:

``bad_json``         not JSON (orjson's rules: no NaN, nesting up to 1,024), or not an object
``error_line``       ``error`` is not null
``missing_output``   ``output`` or its ``recommendedItems`` list is missing or not a list
``empty_output``     ``recommendedItems`` is empty
``missing_user_id``  ``input.userId`` is missing, empty, or neither a string nor an integer
``bad_items``        an item id is not a string (only checked without ``known_items``)
``unknown_items``    no item id is in the catalog (a line that keeps one known id is used, and
                     the ids dropped from it are counted apart: ``SkipCounter.unknown_ids``)
``duplicate_user``   a user already seen in an earlier well-formed line or part: the first line
                     wins, even when none of its items could be used

On a duplicated key the last value counts.

`check_recommendation_quality` then decides whether the edition may go on: a few unknown ids
are retired content (dropped, counted, named in the plan's warnings); many mean the catalog and
the output do not belong together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import orjson

from calm_mail.errors import InputError
from calm_mail.inputs.sources import READ_ERRORS, list_prefix, open_source, read_error
from calm_mail.records import Recommendation, SkipCounter

SUFFIXES = (".out", ".out.gz")
Known = frozenset[str] | set[str]


def iter_recommendations(
    prefix: str,
    *,
    skips: SkipCounter,
    known_items: Iterable[str] | None = None,
    max_lines: int | None = None,
) -> Iterator[Recommendation]:
    """Stream the usable lines of every ``*.out``/``*.out.gz`` part under `prefix`, in order.

    With `known_items` (the catalog's ids), the ids it lacks are dropped and counted; without,
    every id must be a string. Raises `InputError` when the prefix holds no part file or a
    part cannot be read. `skips.seen()` is called once per non-blank line. With `max_lines`,
    only the first `max_lines` non-blank lines of each part are read (a sample).
    """
    parts = list_prefix(prefix, SUFFIXES)
    if not parts:
        raise InputError(
            f"no Personalize output ({', '.join('*' + s for s in SUFFIXES)}) under this prefix",
            path=prefix,
        )
    known = _as_set(known_items)
    users: set[str] = set()
    for part in parts:
        yield from _read_part(part, skips, known, users, max_lines)


def _as_set(known: Iterable[str] | None) -> Known | None:
    if known is None or isinstance(known, set | frozenset):
        return known
    return frozenset(known)


class _Verdict(NamedTuple):
    """What one line comes to."""

    reason: str | None  # why the line is skipped, or None
    rec: Recommendation | None
    user_id: str | None = None  # once the line is well formed: duplicates are found by it
    read: int = 0  # ids checked against the catalog
    dropped: tuple[str, ...] = ()  # of those, the ones it does not know (a junk value's repr)


def _read_part(
    part: str, skips: SkipCounter, known: Known | None, users: set[str], max_lines: int | None
) -> Iterator[Recommendation]:
    with open_source(part) as stream:
        lineno = 0
        left = -1 if max_lines is None else max_lines
        try:
            for lineno, raw in enumerate(stream, 1):
                if left == 0:
                    return
                try:
                    doc = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    if raw.isspace():
                        continue
                    doc = _NOT_JSON
                skips.seen()
                left -= 1
                rec = _usual(doc, known)
                verdict = _odd(doc, known) if rec is None else _usual_verdict(rec, known)
                rec = _book(verdict, skips, users, part, lineno)
                if rec is not None:
                    yield rec
        except READ_ERRORS as exc:
            raise read_error(exc, f"{part}:{lineno + 1}") from exc


_NOT_JSON = object()


def _usual_verdict(rec: Recommendation, known: Known | None) -> _Verdict:
    return _Verdict(None, rec, rec.user_id, 0 if known is None else len(rec.item_ids))


def _book(
    verdict: _Verdict, skips: SkipCounter, users: set[str], part: str, lineno: int
) -> Recommendation | None:
    """Count `verdict` in `skips`; its record, unless its user was seen before."""
    reason, rec, user_id, read, dropped = verdict
    if user_id is not None:  # a well-formed line: the user's first one wins
        if user_id in users:
            reason, rec = "duplicate_user", None
        else:
            users.add(user_id)
            skips.items_read += read
            skips.unknown_ids.update(dropped)
    if reason is not None:
        skips.add(reason, f"{part}:{lineno}")
    return rec


def _usual(doc: object, known: Known | None) -> Recommendation | None:
    """The record of a usual line (see the module's docstring); None for any other line."""
    if type(doc) is not dict or doc.get("error") is not None:
        return None
    output, given = doc.get("output"), doc.get("input")
    if type(output) is not dict or type(given) is not dict:
        return None
    items, user_id = output.get("recommendedItems"), given.get("userId")
    if type(items) is not list or not items or type(user_id) is not str or not user_id:
        return None
    if not (_all_strings(items) if known is None else _all_known(known, items)):
        return None
    return Recommendation(user_id=user_id, item_ids=tuple(items))


def _odd(doc: object, known: Known | None) -> _Verdict:
    """The strict path: why the line cannot be used, or its record without the unknown ids."""
    if type(doc) is not dict:
        return _Verdict("bad_json", None)
    if doc.get("error") is not None:
        return _Verdict("error_line", None)
    output = doc.get("output")
    items = output.get("recommendedItems") if type(output) is dict else None
    if type(items) is not list:
        return _Verdict("missing_output", None)
    if not items:
        return _Verdict("empty_output", None)
    given = doc.get("input")
    user_id = _user_id(given.get("userId")) if type(given) is dict else None
    if not user_id:
        return _Verdict("missing_user_id", None)
    if known is None:
        if not _all_strings(items):
            return _Verdict("bad_items", None, user_id)
        return _Verdict(None, Recommendation(user_id=user_id, item_ids=tuple(items)), user_id)
    kept = tuple(i for i in items if type(i) is str and i in known)
    dropped = tuple(_named(i) for i in items if type(i) is not str or i not in known)
    rec = Recommendation(user_id=user_id, item_ids=kept) if kept else None
    return _Verdict(None if kept else "unknown_items", rec, user_id, len(items), dropped)


def _user_id(user_id: object) -> str | None:
    if type(user_id) is int:
        return str(user_id)
    return user_id if type(user_id) is str else None


def _all_strings(items: list[object]) -> bool:
    try:
        "".join(items)  # type: ignore[arg-type]  # one C-level pass that rejects non-strings
    except TypeError:
        return False
    return True


def _all_known(known: Known, items: list[object]) -> bool:
    """Every one of `items` is in `known` (False for an unhashable junk value)."""
    try:
        return known.issuperset(items)
    except TypeError:  # a list or an object among the ids
        return False


def _named(value: object) -> str:
    """An unknown id as it is counted: the id, or a junk value's short repr."""
    if type(value) is str:
        return value
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


class GateFailed(InputError):
    """A quality gate refused the Personalize output. `key` is the campaign key of the gate
    (``inputs.max_bad_share``, ``inputs.max_unknown_item_share``, ``inputs.min_coverage``)."""

    def __init__(self, message: str, *, key: str, path: str) -> None:
        self.key = key
        super().__init__(message, path=path)


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
    """Stop the edition (raise `InputError`; `GateFailed` for a gate) when the Personalize
    output is not fit to use: the line gates (`check_line_quality`), then coverage,
    ``covered_users / audience_size``, at least `min_coverage` (inclusive)."""
    if skips.total == 0:
        raise InputError("the Personalize output has no lines", path=source)
    check_line_quality(
        skips,
        max_bad_share=max_bad_share,
        max_unknown_share=max_unknown_share,
        catalog=catalog,
        source=source,
    )
    coverage = covered_users / audience_size if audience_size else 1.0
    if coverage < min_coverage:
        raise GateFailed(
            f"the Personalize output covers {covered_users:,} of {audience_size:,} users "
            f"({coverage:.1%}), less than the required {min_coverage:.1%} "
            "(inputs.min_coverage); was the batch job run on the whole audience?",
            key="inputs.min_coverage",
            path=source,
        )


def check_line_quality(
    skips: SkipCounter,
    *,
    max_bad_share: float,
    max_unknown_share: float,
    catalog: str,
    source: str,
    read: str = "read",
) -> None:
    """The gates on the lines `skips` counted, the run's over every line and `validate`'s over
    its sample alike (raise `GateFailed`). Unknown items first (`check_unknown_items`); then bad
    lines, every line `skips` counted whatever the reason (a line counts once), at most
    `max_bad_share` of them (inclusive). `read` says which lines were read, for the message."""
    check_unknown_items(
        skips, max_share=max_unknown_share, catalog=catalog, source=source, read=read
    )
    check_bad_share(skips, max_share=max_bad_share, source=source, read=read)


def check_bad_share(
    skips: SkipCounter, *, max_share: float, source: str, read: str = "read"
) -> None:
    """Raise `GateFailed` when more than `max_share` of the lines `skips` counted are bad."""
    share = skips.share()
    if share > max_share:
        lines = "Personalize lines" if read == "read" else f"Personalize lines {read}"
        raise GateFailed(
            f"{skips.skipped:,} of {skips.total:,} {lines} ({share:.2%}) are bad, "
            f"more than the allowed {max_share:.2%} (inputs.max_bad_share): "
            f"{_reasons(skips)}",
            key="inputs.max_bad_share",
            path=source,
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
    """Raise `GateFailed` when more than `max_share` of the item ids read are not in
    `catalog`: then the catalog and the output do not belong together. `read` says which ids
    were read, for the message."""
    if skips.unknown_share() > max_share:
        raise GateFailed(
            f"{unknown_share_text(skips, read, catalog)}, more than the allowed {max_share:.2%} "
            f"(inputs.max_unknown_item_share): {unknown_ids_text(skips)}; is it the catalog "
            "this output was made from?",
            key="inputs.max_unknown_item_share",
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
