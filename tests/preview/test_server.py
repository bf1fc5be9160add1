"""The page's state without a browser: what it watches, and that a change re-reads it all."""

from __future__ import annotations

import os
import re
from pathlib import Path

from calm_mail.preview.server import PreviewApp, available_editions, with_placeholders
from tests.preview.conftest import CAMPAIGN, EDITION, Cli


def _touch_later(path: Path, text: str) -> None:
    """Write `text` and move the mtime on, so even a coarse-grained clock sees a change."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_a_rules_change_is_read_again(copy_root: Path) -> None:
    app = PreviewApp(CAMPAIGN, root=copy_root)
    first = app.prepared(EDITION.key).persona("japanese").for_arm("personalized")
    assert first.delivery is not None and len(first.delivery.item_ids) > 4
    assert app.check_files() == 1
    rules = copy_root / "rules" / f"{CAMPAIGN}.toml"
    text = rules.read_text(encoding="utf-8")
    assert "max = 6" in text
    _touch_later(rules, text.replace("max = 6", "max = 4"))
    assert app.check_files() == 2
    again = app.prepared(EDITION.key).persona("japanese").for_arm("personalized")
    assert again.delivery is not None and len(again.delivery.item_ids) == 4
    assert app.check_files() == 2  # nothing else changed


def test_the_editions_picks_are_watched_once_in_use(copy_root: Path) -> None:
    app = PreviewApp(CAMPAIGN, root=copy_root)
    app.prepared(EDITION.key)
    picks = copy_root / "data" / "demo" / "editorial" / f"{EDITION.key}.toml"
    _touch_later(picks, picks.read_text(encoding="utf-8") + "\n# an editor was here\n")
    assert app.check_files() == 2


def test_editions_are_found_from_the_editorial_files(copy_root: Path) -> None:
    from calm_mail.campaign import load_campaign

    folder = copy_root / "data" / "demo" / "editorial"
    (folder / "2026-W11.toml").write_text((folder / f"{EDITION.key}.toml").read_text())
    (folder / "notes.toml").write_text("")
    assert available_editions(load_campaign(CAMPAIGN, copy_root)) == ["2026-W11", EDITION.key]


def test_placeholders_replace_only_remote_images() -> None:
    html = '<img alt="a" src="https://img.example/a.jpg"><a href="https://x.example/">x</a>'
    swapped = with_placeholders(html)
    src = re.search(r'<img alt="a" src="([^"]*)">', swapped)
    assert src is not None and src[1].startswith("data:image/svg+xml;utf8,")
    assert "<" not in src[1] and ">" not in src[1] and "img.example" not in swapped
    assert swapped.endswith('<a href="https://x.example/">x</a>')


def test_preview_help_lists_the_default_commands_options(cli: Cli) -> None:
    result = cli("preview", "--help")
    assert result.exit_code == 0
    assert "--persona NAME" in result.stdout and "serve" in result.stdout
    assert "preview serve CAMPAIGN" in result.stdout
