"""The editors' picks for one edition: an ordered "what's new" list per locale, in TOML.

::

    edition = "2026-W48"

    [locales]
    "en-US" = ["40211", "40187", "40390"]   # in the order the email shows them
    "es-ES" = ["40412", "40211"]

Every problem in the file is reported at once, in one `InputError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Container, Mapping
from types import MappingProxyType
from typing import Any

from calm_mail.errors import InputError, toml_problem
from calm_mail.inputs.sources import READ_ERRORS, open_source, read_error
from calm_mail.records import EditorialPicks


def read_editorial(
    path: str, edition: str, *, known_items: Container[str] | None = None
) -> EditorialPicks:
    """The picks of `edition` from `path` (local or s3://).

    Raises `InputError` when the file is missing or unreadable, is not TOML, is for another
    edition, has no ``[locales]`` table, or lists an empty, repeated, non-string or (with
    `known_items`) unknown item id.
    """
    doc = _load(path, edition)
    problems: list[str] = []
    if doc.get("edition") != edition:
        problems.append(f"edition: is {doc.get('edition')!r}, expected {edition!r}")
    locales = doc.get("locales")
    if not isinstance(locales, Mapping) or not locales:
        problems.append('locales: missing; add a [locales] table: "en-US" = ["item id", ...]')
        locales = {}
    by_locale = {str(k): _picks(str(k), v, known_items, problems) for k, v in locales.items()}
    if problems:
        raise InputError("bad editorial list:\n  " + "\n  ".join(problems), path=path)
    return EditorialPicks(edition=edition, by_locale=MappingProxyType(by_locale), source=path)


def _load(path: str, edition: str) -> dict[str, Any]:
    try:
        with open_source(path) as stream:
            data = stream.read()
    except InputError as exc:
        raise InputError(
            f"no editorial list for edition {edition} at {path} ({exc}); editors write it at "
            f'{path}: edition = "{edition}" and a [locales] table of ordered item ids'
        ) from exc
    except READ_ERRORS as exc:
        raise read_error(exc, path) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", path=path) from exc
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: TOMLDecodeError and huge ints
        raise InputError(toml_problem(exc, text), path=path) from None


def _picks(
    locale: str, value: Any, known: Container[str] | None, problems: list[str]
) -> tuple[str, ...]:
    key = f"locales.{locale}"
    if not isinstance(value, list) or not value:
        problems.append(f"{key}: expected a non-empty list of item ids")
        return ()
    if not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{key}: every item id must be a non-empty string")
        return ()
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        problems.append(f"{key}: repeated item ids {', '.join(repeated)}")
    unknown = [v for v in value if known is not None and v not in known]
    if unknown:
        problems.append(f"{key}: item ids not in the catalog: {', '.join(unknown)}")
    return tuple(value)
