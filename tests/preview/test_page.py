"""The editors' page, served by the real `calm-mail preview serve` and read in headless Chromium.

Chromium and chromedriver come from Debian's packages (`chromium`, `chromium-driver`). Where
they are missing the browser tests skip with a reason, except under CI, where they must run.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calm_mail.campaign import load_campaign
from calm_mail.preview.preview import EditionPreview
from tests.preview.conftest import CAMPAIGN, EDITION, REPO

SCREENSHOT = "preview-screenshot.png"


# ----------------------------------------------------------------------------- the server


def start_server(root: Path, ledger: Path) -> tuple[subprocess.Popen[str], str]:
    """`calm-mail preview serve` on a free port; returns the process and its URL."""
    env = {**os.environ, "CALM_MAIL_DATABASE_URL": f"sqlite:///{ledger}", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "calm_mail.cli",
        "--root",
        str(root),
        "preview",
        "serve",
        CAMPAIGN,
        "--port",
        "0",
        "--edition",
        EDITION.key,
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("preview: http://"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"preview serve did not start: {line!r} {err}")
    return proc, line.split()[1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def page_root(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy of the demo root: the reload test edits its strings."""
    target = tmp_path_factory.mktemp("page") / "root"
    shutil.copytree(demo_root, target)
    return target


@pytest.fixture(scope="module")
def server(page_root: Path) -> Iterator[str]:
    proc, url = start_server(page_root, page_root.parent / "ledger.db")
    try:
        yield url
    finally:
        stop_server(proc)


def api(url: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(url.rstrip("/") + path, params=params, timeout=30)


def test_serve_listens_on_localhost_and_answers(server: str, page_root: Path) -> None:
    assert server.startswith("http://127.0.0.1:")
    assert api(server, "/api/version").json() == {"version": 1}
    state = api(server, "/api/state").json()
    assert state["edition"] == EDITION.key and EDITION.key in state["editions"]
    assert [a["name"] for a in state["arms"]] == ["control", "personalized"]
    assert {p["name"] for p in state["personas"]} >= {"beginner", "missing", "spanish"}
    page = api(server, "/")
    assert page.status_code == 200 and "calm-mail preview" in page.text
    assert "<script src" not in page.text and '<link rel="stylesheet"' not in page.text


def test_preview_api_matches_the_composer(server: str, page_root: Path) -> None:
    data = api(server, "/api/preview", edition=EDITION.key, persona="sleep").json()
    expected = EditionPreview(load_campaign(CAMPAIGN, page_root), EDITION).persona(
        "sleep", arms=["control", "personalized"]
    )
    by_arm = {a["arm"]: a for a in data["arms"]}
    assert set(by_arm) == {"control", "personalized"}
    for arm in expected.arms:
        assert arm.message is not None
        assert by_arm[arm.arm]["html"] == arm.message.html  # placeholders off by default
        assert by_arm[arm.arm]["subject"] == arm.message.subject
        assert by_arm[arm.arm]["own"] == arm.own
    raw = api(server, "/email", edition=EDITION.key, persona="sleep", arm="personalized")
    assert raw.text == expected.for_arm("personalized").message.html  # type: ignore[union-attr]
    unknown = api(server, "/api/preview", edition=EDITION.key, user="no-such-user")
    assert unknown.status_code == 404 and "not in the audience" in unknown.json()["error"]
    bad = api(server, "/api/preview", edition="2026-W99", persona="sleep")
    assert bad.status_code == 422 and "no such ISO week" in bad.json()["error"]


# ----------------------------------------------------------------------------- the browser


@pytest.fixture
def browser(chromium_driver: Any) -> Any:
    chromium_driver.set_window_size(1440, 1200)
    return chromium_driver


def wait_for(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def frames(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, "iframe.email-frame"))


def subjects(driver: Any) -> dict[str, str]:
    """Arm -> subject as the page shows it, read in one script (the page may be re-rendering)."""
    found: dict[str, str] = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('.subject')]"
        ".map((e) => [e.dataset.arm, e.textContent]))"
    )
    return found


def open_persona(driver: Any, server: str, persona: str) -> None:
    driver.get(f"{server}?persona={persona}")
    wait_for(driver, lambda d: len(frames(d)) == 4)


def test_every_arm_at_desktop_and_mobile_width(browser: Any, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    open_persona(browser, server, "sleep")
    data = api(server, "/api/preview", edition=EDITION.key, persona="sleep").json()
    seen = set()
    for frame in frames(browser):
        arm, width = frame.get_attribute("data-arm"), int(frame.get_attribute("data-width"))
        assert frame.size["width"] == width
        seen.add((arm, width))
        browser.switch_to.frame(frame)
        try:
            title = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".cm-title a"))
            assert title.is_displayed() and title.text.strip()
            assert browser.execute_script("return document.documentElement.clientWidth") == width
        finally:
            browser.switch_to.default_content()
    assert seen == {(arm, w) for arm in ("control", "personalized") for w in (600, 375)}
    by_arm = {a["arm"]: a for a in data["arms"]}
    assert subjects(browser) == {arm: by_arm[arm]["subject"] for arm in by_arm}
    preheaders = browser.find_elements(By.CSS_SELECTOR, ".preheader")
    assert {p.text for p in preheaders} == {a["preheader"] for a in data["arms"]}
    texts = browser.find_elements(By.CSS_SELECTOR, "pre.text-part")
    assert len(texts) == 2 and all("====" in t.text and t.is_displayed() for t in texts)
    step = browser.find_element(By.CSS_SELECTOR, '.trace-step[data-step="only_new"]')
    assert step.is_displayed() and "items" in step.text
    lint = browser.find_element(By.ID, "lint")
    assert lint.is_displayed() and "lint" in lint.text.lower()
    _screenshot(browser, tmp_path)


def _screenshot(browser: Any, tmp_path: Path) -> None:
    shot = tmp_path / SCREENSHOT
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if not os.environ.get("CI"):
        out = REPO / "out"
        out.mkdir(exist_ok=True)
        shutil.copyfile(shot, out / SCREENSHOT)


def test_a_rule_trace_shows_what_was_dropped_and_why(browser: Any, server: str) -> None:
    from selenium.webdriver.common.by import By

    open_persona(browser, server, "experienced")
    steps = browser.find_elements(By.CSS_SELECTOR, '.trace-step[data-step="exclude_completed"]')
    dropping = [s for s in steps if "dropped" in s.text]
    assert dropping, "the experienced persona completed some of the new items"
    dropping[0].find_element(By.TAG_NAME, "summary").click()
    reason = wait_for(browser, lambda d: dropping[0].find_element(By.CSS_SELECTOR, "li.dropped"))
    assert "already completed" in reason.text


def test_switching_persona_shows_their_email(browser: Any, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_persona(browser, server, "beginner")
    before = subjects(browser)
    Select(browser.find_element(By.ID, "persona")).select_by_value("spanish")
    spanish = api(server, "/api/preview", edition=EDITION.key, persona="spanish").json()
    wanted = {a["arm"]: a["subject"] for a in spanish["arms"]}
    assert wanted != before
    wait_for(browser, lambda d: subjects(d) == wanted)
    assert "es-ES" in browser.find_element(By.ID, "who").text
    assert "persona=spanish" in browser.current_url


def test_a_user_id_can_be_previewed(browser: Any, server: str, page_root: Path) -> None:
    from selenium.webdriver.common.by import By

    user_id = api(server, "/api/state").json()["users"][1]
    browser.get(f"{server}?user={user_id}")
    wait_for(browser, lambda d: user_id in d.find_element(By.ID, "who").text)
    data = api(server, "/api/preview", edition=EDITION.key, user=user_id).json()
    own = next(a for a in data["arms"] if a["own"])
    if own.get("subject"):
        wait_for(browser, lambda d: subjects(d).get(own["arm"]) == own["subject"])
    else:  # excluded: the page says why
        wait_for(browser, lambda d: own["exclusion"] in d.find_element(By.ID, "arms").text)


def test_page_reloads_itself_when_a_strings_file_changes(
    browser: Any, server: str, page_root: Path
) -> None:
    open_persona(browser, server, "beginner")
    strings = page_root / "templates" / CAMPAIGN / "strings" / "en-US.toml"
    original = strings.read_text(encoding="utf-8")
    edited = original.replace(
        'subject = "Your Weekly Winddown: {{ first_title }}"',
        'subject = "Freshly edited: {{ first_title }}"',
    )
    assert edited != original
    started = time.monotonic()
    strings.write_text(edited, encoding="utf-8")
    try:
        wait_for(
            browser,
            lambda d: (
                all(s.startswith("Freshly edited: ") for s in subjects(d).values()) and subjects(d)
            ),
            10,
        )
        assert time.monotonic() - started < 10
        assert api(server, "/api/version").json()["version"] >= 2
    finally:
        strings.write_text(original, encoding="utf-8")


def test_a_broken_template_shows_the_error_until_it_is_fixed(server: str, page_root: Path) -> None:
    footer = page_root / "templates" / CAMPAIGN / "partials" / "footer.mjml"
    original = footer.read_text(encoding="utf-8")
    # A prepared edition is watched too: dropping it from the cache is not a change of its own.
    assert api(server, "/api/preview", edition=EDITION.key, persona="beginner").status_code == 200
    version = api(server, "/api/version").json()["version"]
    footer.write_text(original.replace("</mj-text>", "", 1), encoding="utf-8")
    try:
        assert api(server, "/api/version").json()["version"] == version + 1
        broken = api(server, "/api/preview", edition=EDITION.key, persona="beginner")
        assert broken.status_code == 422 and "MJML" in broken.json()["error"]
    finally:
        footer.write_text(original, encoding="utf-8")
    assert api(server, "/api/version").json()["version"] == version + 2
    assert api(server, "/api/preview", edition=EDITION.key, persona="beginner").status_code == 200
