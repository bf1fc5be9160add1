"""Rendering the Weekly Winddown: per locale, escaping, links, the text part, errors."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import Composer
from calm_mail.compose.lint import MAX_HTML_BYTES, click_tracked, images_without_alt
from calm_mail.errors import ConfigError, RenderError
from calm_mail.records import ContentSource, Item

from .conftest import EDITION, LOCALES, NASTY_TITLE, DeliveryFactory, make_item

DELIVERY_ID = "dAbc123_-xyzXYZ0987654"


@pytest.mark.parametrize("locale", LOCALES)
def test_every_locale_renders_a_complete_email(
    composer: Composer, delivery: DeliveryFactory, locale: str
) -> None:
    msg = composer.compose(delivery(locale=locale), DELIVERY_ID)
    strings = composer.templates.for_locale(locale).strings
    assert "Softening Into Sleep" in msg.subject
    assert "Softening Into Sleep" in msg.preheader
    assert escape(strings.get("heading")) in msg.html
    assert strings.get("heading") in msg.text
    for part in (msg.html, msg.text):
        assert strings.get("types.sleep_story") in part
        assert strings.get("sessions").format(n=7) in part
    assert f'lang="{locale}"' in msg.html
    assert msg.html.count("lid=card-") >= 6 * 2


def test_card_shows_title_type_duration_narrator_and_alt(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    msg = composer.compose(delivery(), DELIVERY_ID)
    assert "The Lighthouse Keeper" in msg.html
    assert "45 min" in msg.html and "1 h 15 min" in msg.html  # 2700 s, 4500 s
    assert "with Jonah Reed" in msg.html
    assert 'alt="The Lighthouse Keeper, Sleep Story"' in msg.html
    assert "Part 3 of 7" in msg.html and "7 sessions" in msg.html
    assert "Continue the series" in msg.html


def test_deep_links_carry_utm_rid_and_a_link_id_per_card(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    msg = composer.compose(delivery(), DELIVERY_ID)
    urls = re.findall(r"https://calm\.example/app/session/\S+", msg.text)
    assert len(urls) == 6
    for n, url in enumerate(urls, start=1):
        query = parse_qs(urlsplit(url).query)
        assert query == {
            "utm_source": ["email"],
            "utm_medium": ["email"],
            "utm_campaign": ["weekly_winddown"],
            "utm_content": [EDITION],
            "lid": [f"card-{n}"],
            "rid": [DELIVERY_ID],
        }
        assert escape(url) in msg.html  # & becomes &amp; inside href
    assert "https://calm.example/app/session/mu1?" in msg.text  # relative link joined to base


def test_catalog_text_is_escaped_in_html_and_intact_in_text(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    msg = composer.compose(delivery(), DELIVERY_ID)
    assert "<script>" not in msg.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Rain &amp; Thunder&#39;s" in msg.html
    assert NASTY_TITLE in msg.text
    assert """O'Brien & "Sons" <b>""" in msg.text
    assert "O&#39;Brien &amp; &#34;Sons&#34; &lt;b&gt;" in msg.html


def test_text_part_has_every_card_unsubscribe_preferences_and_address(
    composer: Composer, delivery: DeliveryFactory, campaign: Campaign
) -> None:
    msg = composer.compose(delivery(), DELIVERY_ID)
    for title in ("Softening Into Sleep", "7 Days of Calm: Day 3", "Forest Rain", "Slow Piano"):
        assert title in msg.text
    assert f"Unsubscribe: https://calm.example/email/unsubscribe/{DELIVERY_ID}" in msg.text
    assert (
        f"Email preferences: https://calm.example/email/preferences?token={DELIVERY_ID}" in msg.text
    )
    assert campaign.sender.postal_address in msg.text
    assert f'href="https://calm.example/email/unsubscribe/{DELIVERY_ID}"' in msg.html
    assert escape(campaign.sender.postal_address) in msg.html


def test_message_fields_headers_and_custom_args(
    composer: Composer, delivery: DeliveryFactory, campaign: Campaign
) -> None:
    planned = delivery()
    msg = composer.compose(planned, DELIVERY_ID)
    assert msg.headers == {
        "List-Unsubscribe": (
            f"<https://calm.example/email/unsubscribe/{DELIVERY_ID}>, "
            f"<mailto:unsubscribe@mail.calm.example?subject=unsubscribe-{DELIVERY_ID}>"
        ),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert msg.custom_args == {
        "delivery_id": DELIVERY_ID,
        "campaign": "weekly_winddown",
        "edition": EDITION,
        "arm": "personalized",
    }
    assert "reader@example.com" not in str(msg.custom_args)
    assert msg.categories == ("weekly_winddown",)
    assert msg.asm_group_id == 21001
    assert msg.send_at == planned.send_at
    assert (msg.from_email, msg.from_name, msg.reply_to) == (
        "winddown@mail.calm.example",
        "Calm",
        "hello@calm.example",
    )


def test_sendgrid_subscription_tracking_mode(
    campaign: Campaign, catalog: dict[str, Item], delivery: DeliveryFactory
) -> None:
    sender = campaign.sender.model_copy(
        update={"list_unsubscribe": "sendgrid", "preferences_url": None}
    )
    sendgrid_campaign = campaign.model_copy(update={"sender": sender})
    msg = Composer(sendgrid_campaign, catalog, EDITION).compose(delivery(), DELIVERY_ID)
    assert msg.headers == {}
    assert 'href="<%asm_group_unsubscribe_raw_url%>"' in msg.html
    assert 'href="<%asm_preferences_raw_url%>"' in msg.html
    assert "Unsubscribe: <%asm_group_unsubscribe_raw_url%>" in msg.text


def test_rendered_html_meets_the_bulk_sender_checks(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    html = composer.compose(delivery(), DELIVERY_ID).html
    assert images_without_alt(html) == []
    assert html.count("<img") == 6
    assert '<meta name="color-scheme" content="light dark"' in html
    assert '<meta name="supported-color-schemes" content="light dark"' in html
    dark = re.search(r"@media \(prefers-color-scheme: dark\) \{(.*?)\}\s*\}", html, re.DOTALL)
    assert dark is not None and "!important" in dark[1]
    assert "max-width:600px" in html  # cards keep the body width (no MRML include quirk)


@pytest.mark.parametrize("locale", LOCALES)
def test_largest_email_stays_under_90kb_after_click_tracking(
    campaign: Campaign, delivery: DeliveryFactory, locale: str
) -> None:
    long = [
        make_item(
            f"l{n}",
            title="Long " * 30,
            narrator="N" * 60,
            collection_id=f"s{n}",
            collection_position=2,
            image_url="https://img.calm.example/" + "i" * 90,
            deep_link="https://calm.example/app/" + "d" * 90,
        )
        for n in range(6)
    ]
    siblings = [make_item(f"p{n}", collection_id=f"s{n}", collection_position=1) for n in range(6)]
    catalog = {item.item_id: item for item in long + siblings}
    msg = Composer(campaign, catalog, EDITION).compose(
        delivery(locale=locale, item_ids=tuple(item.item_id for item in long)), DELIVERY_ID
    )
    tracked = click_tracked(msg.html)
    assert tracked.count("ct.sendgrid.net") == msg.html.count("href=") >= 20
    assert len(tracked.encode()) < MAX_HTML_BYTES


def test_same_input_gives_the_same_message(
    campaign: Campaign, catalog: dict[str, Item], delivery: DeliveryFactory
) -> None:
    first = Composer(campaign, catalog, EDITION).compose(delivery(), DELIVERY_ID)
    again = Composer(campaign, catalog, EDITION).compose(delivery(), DELIVERY_ID)
    assert first == again


def test_missing_item_names_item_and_user(composer: Composer, delivery: DeliveryFactory) -> None:
    with pytest.raises(RenderError, match=r"'gone'.*'u-42'"):
        composer.compose(delivery(item_ids=("m1", "gone")), DELIVERY_ID)


def test_holdout_is_never_composed(composer: Composer, delivery: DeliveryFactory) -> None:
    with pytest.raises(ValueError, match="holdout"):
        composer.compose(delivery(source=ContentSource.HOLDOUT, item_ids=()), DELIVERY_ID)


def test_unknown_locale_is_a_config_error(composer: Composer, delivery: DeliveryFactory) -> None:
    with pytest.raises(ConfigError, match="it-IT"):
        composer.compose(delivery(locale="it-IT"), DELIVERY_ID)


def test_javascript_links_are_refused(campaign: Campaign, delivery: DeliveryFactory) -> None:
    catalog = {"m1": make_item("m1", deep_link="javascript:alert(1)")}
    with pytest.raises(RenderError, match="javascript"):
        Composer(campaign, catalog, EDITION).compose(delivery(item_ids=("m1",)), DELIVERY_ID)


def test_subject_stays_on_one_line(campaign: Campaign, delivery: DeliveryFactory) -> None:
    catalog = {"m1": make_item("m1", title="Line one\r\nLine  two")}
    msg = Composer(campaign, catalog, EDITION).compose(delivery(item_ids=("m1",)), DELIVERY_ID)
    assert msg.subject == "Your Weekly Winddown: Line one Line two"


_catalog_text = st.text(min_size=1, max_size=120).filter(lambda s: s.strip() != "")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=_catalog_text, narrator=_catalog_text, locale=st.sampled_from(LOCALES))
def test_any_catalog_text_renders_and_round_trips_in_text(
    composer: Composer, delivery: DeliveryFactory, title: str, narrator: str, locale: str
) -> None:
    item = make_item("h1", title=title, narrator=narrator)
    local = Composer(composer.campaign, {"h1": item}, EDITION, templates=composer.templates)
    msg = local.compose(delivery(locale=locale, item_ids=("h1",)), DELIVERY_ID)
    assert title in msg.text
    assert narrator in msg.text
    assert escape(title) in msg.html.replace("&#39;", "&#x27;").replace("&#34;", "&quot;")
    assert "\n" not in msg.subject and "\r" not in msg.subject
