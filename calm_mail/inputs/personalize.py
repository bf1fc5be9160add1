"""The Amazon Personalize batch-inference output: ``*.out`` JSON Lines part files under a prefix.

Each line looks like::

    {"input":{"userId":"4638"},"output":{"recommendedItems":["63992",...],"scores":[0.01,...]},
     "error":null}

Lines are streamed one at a time (memory does not grow with the files; only the set of user ids
already seen does, to drop duplicates). A line that cannot be used is counted in a `SkipCounter`
by reason, with its ``file:line``, and never stops the run:

``bad_json``         not JSON, or not a JSON object
``error_line``       ``error`` is not null
``missing_output``   ``output`` or its ``recommendedItems`` list is missing or not a list
``empty_output``     ``recommendedItems`` is empty
``missing_user_id``  ``input.userId`` is missing or empty
``bad_items``        an item id is not a string (only checked without ``known_items``)
``unknown_items``    some item ids are not in the catalog: they are dropped, and the line too
                     if none is left
``duplicate_user``   a user already seen in an earlier line or part: the first line wins

`check_recommendation_quality` then decides whether the edition may go on.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import Any

import orjson

from calm_mail.errors import InputError
from calm_mail.inputs.sources import READ_ERRORS, list_prefix, open_source, read_error
from calm_mail.records import Recommendation, SkipCounter

SUFFIXES = (".out", ".out.gz")


def iter_recommendations(
    prefix: str, *, skips: SkipCounter, known_items: Container[str] | None = None
) -> Iterator[Recommendation]:
    """Stream the usable lines of every ``*.out``/``*.out.gz`` part under `prefix`, in order.

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
    for part in parts:
        yield from _read_part(part, skips, known, users)


def _as_set(known: Container[str] | None) -> Container[str] | None:
    """A frozenset for the fast ``issuperset`` check, when the container can be iterated."""
    if known is None or isinstance(known, set | frozenset):
        return known
    if isinstance(known, Iterable):
        return frozenset(known)
    return known


def _read_part(
    part: str, skips: SkipCounter, known: Any, users: set[str]
) -> Iterator[Recommendation]:
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    fast = isinstance(known, frozenset | set)
    with open_source(part) as stream:
        lineno = 0
        try:
            for lineno, raw in enumerate(stream, 1):
                try:
                    doc = loads(raw)
                except decode_error:
                    if raw.strip():
                        skips.seen()
                        skips.add("bad_json", f"{part}:{lineno}")
                    continue
                skips.seen()
                reason, rec = _parse(doc, known, fast)
                if rec is not None:
                    if rec.user_id in users:
                        reason, rec = "duplicate_user", None
                    else:
                        users.add(rec.user_id)
                if reason is not None:
                    skips.add(reason, f"{part}:{lineno}")
                if rec is not None:
                    yield rec
        except READ_ERRORS as exc:
            raise read_error(exc, f"{part}:{lineno + 1}") from exc


def _parse(doc: Any, known: Any, fast: bool) -> tuple[str | None, Recommendation | None]:
    """(skip reason or None, the record or None). A record with a reason lost some items."""
    if type(doc) is not dict:
        return "bad_json", None
    if doc.get("error") is not None:
        return "error_line", None
    output: Any = doc.get("output")
    items = output.get("recommendedItems") if type(output) is dict else None
    if type(items) is not list:
        return "missing_output", None
    if not items:
        return "empty_output", None
    user_id = _user_id(doc.get("input"))
    if not user_id:
        return "missing_user_id", None
    scores = _scores(output.get("scores"), len(items))
    if known is None:
        if not _all_strings(items):
            return "bad_items", None
        return None, Recommendation(user_id=user_id, item_ids=tuple(items), scores=scores)
    if fast and _all_known(known, items):
        return None, Recommendation(user_id=user_id, item_ids=tuple(items), scores=scores)
    return _drop_unknown(user_id, items, scores, known)


def _user_id(value: Any) -> str | None:
    if type(value) is not dict:
        return None
    user_id = value.get("userId")
    if type(user_id) is int:
        return str(user_id)
    return user_id if type(user_id) is str else None


def _scores(value: Any, n: int) -> tuple[float, ...] | None:
    if type(value) is not list or len(value) != n:
        return None
    try:
        sum(value)  # one C-level pass that rejects non-numbers
    except TypeError:
        return None
    return tuple(value)


def _all_strings(items: list[Any]) -> bool:
    try:
        "".join(items)  # one C-level pass that rejects non-strings
    except TypeError:
        return False
    return True


def _all_known(known: frozenset[str], items: list[Any]) -> bool:
    try:
        return known.issuperset(items)
    except TypeError:  # an unhashable junk value
        return False


def _drop_unknown(
    user_id: str, items: list[Any], scores: tuple[float, ...] | None, known: Container[str]
) -> tuple[str | None, Recommendation | None]:
    keep = [i for i, item in enumerate(items) if type(item) is str and item in known]
    if not keep:
        return "unknown_items", None
    if len(keep) == len(items):
        return None, Recommendation(user_id=user_id, item_ids=tuple(items), scores=scores)
    return "unknown_items", Recommendation(
        user_id=user_id,
        item_ids=tuple(items[i] for i in keep),
        scores=None if scores is None else tuple(scores[i] for i in keep),
    )


def check_recommendation_quality(
    skips: SkipCounter,
    *,
    covered_users: int,
    audience_size: int,
    max_bad_share: float,
    min_coverage: float,
    source: str,
) -> None:
    """Stop the edition (raise `InputError`) when the Personalize output is not fit to use.

    Bad lines are every line `skips` counted, whatever the reason (a line counts once);
    coverage is ``covered_users / audience_size``. Both limits are inclusive: a share equal to
    `max_bad_share`, or a coverage equal to `min_coverage`, passes.
    """
    if skips.total == 0:
        raise InputError("the Personalize output has no lines", path=source)
    share = skips.share()
    if share > max_bad_share:
        raise InputError(
            f"{skips.skipped:,} of {skips.total:,} Personalize lines ({share:.2%}) are bad, more "
            f"than the allowed {max_bad_share:.2%} (inputs.max_bad_share): {_reasons(skips)}",
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


def _reasons(skips: SkipCounter) -> str:
    parts = []
    for reason, n in skips.counts.most_common():
        first = skips.examples.get(reason, [])
        parts.append(f"{reason} {n:,}" + (f" (first at {first[0]})" if first else ""))
    return "; ".join(parts)
