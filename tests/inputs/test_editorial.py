"""The editors' picks for an edition."""

from __future__ import annotations

from pathlib import Path

import pytest

from calm_mail.errors import InputError
from calm_mail.inputs import read_editorial

KNOWN = {"i1", "i2", "i3"}


def test_good_file(data_dir: Path) -> None:
    path = str(data_dir / "editorial/2026-W48.toml")
    picks = read_editorial(path, "2026-W48", known_items=KNOWN)
    assert picks.edition == "2026-W48" and picks.source == path
    assert picks.for_locale("en-US") == ("i2", "i1")
    assert picks.for_locale("es-ES") == ("i1",)
    assert picks.for_locale("fr-FR") is None


def test_missing_file_says_where_editors_write_it(data_dir: Path) -> None:
    path = str(data_dir / "editorial/2026-W01.toml")
    with pytest.raises(InputError) as exc:
        read_editorial(path, "2026-W01")
    message = str(exc.value)
    assert message.startswith(f"no editorial list for edition 2026-W01 at {path}")
    assert f"editors write it at {path}" in message
    assert exc.value.exit_code == 2


def test_wrong_edition(data_dir: Path) -> None:
    with pytest.raises(InputError, match="edition: is '2026-W47', expected '2026-W48'"):
        read_editorial(str(data_dir / "editorial/wrong_edition.toml"), "2026-W48")


def test_every_problem_is_listed_at_once(data_dir: Path) -> None:
    path = str(data_dir / "editorial/bad_picks.toml")
    with pytest.raises(InputError) as exc:
        read_editorial(path, "2026-W48", known_items=KNOWN)
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{path}: bad editorial list:"
    assert [line.strip() for line in lines[1:]] == [
        "locales.en-US: repeated item ids i1",
        "locales.en-US: item ids not in the catalog: nope",
        "locales.fr-FR: expected a non-empty list of item ids",
        "locales.de-DE: expected a non-empty list of item ids",
        "locales.ja-JP: every item id must be a non-empty string",
    ]


def test_unknown_ids_pass_without_a_catalog(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text('edition = "2026-W48"\n[locales]\n"en-US" = ["anything"]\n')
    assert read_editorial(str(path), "2026-W48").for_locale("en-US") == ("anything",)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_locales.toml", "locales: missing"),
        ("not_toml.toml", "not valid TOML"),
    ],
)
def test_structure_errors(data_dir: Path, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_editorial(str(data_dir / "editorial" / name), "2026-W48")
