"""The receiver over real HTTP: uvicorn on 127.0.0.1, signed requests, a real ledger."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.records import Event, EventType
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.store import Ledger
from calm_mail.track.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER, Credentials
from tests.track.conftest import (
    TS,
    MemoryEvents,
    MemorySink,
    Receiver,
    ServeReceiver,
    half_a_body,
    running_receiver,
    sg_event,
)


def stored(ledger: Ledger, edition: str = "2026-W48") -> dict[str, Event]:
    return {e.event_id: e for e in ledger.events.events_for(edition, "weekly_winddown")}


def test_valid_batch_is_stored_and_a_repeat_adds_nothing(ledger, serve_receiver: ServeReceiver):
    batch = [
        sg_event(1, "processed"),
        sg_event(1, "delivered"),
        sg_event(2, "open", sg_machine_open=True),
        sg_event(3, "open", sg_machine_open=False),
        sg_event(3, "click", url="https://app.example/s/1"),
    ]
    body = orjson.dumps(batch)
    with serve_receiver(ledger) as receiver:
        first = receiver.post(body)
        again = receiver.post(body, path="/")  # the alias; SendGrid retried the same batch
    assert first.status_code == 200, first.text
    assert first.json()["stored"] == 5
    assert again.status_code == 200
    assert again.json() | {"suppressed": 0} == first.json() | {
        "stored": 0,
        "duplicates": 5,
        "suppressed": 0,
    }
    events = stored(ledger)
    assert set(events) == {e["sg_event_id"] for e in batch}
    assert events["ev-open-2"].machine_open and not events["ev-open-3"].machine_open
    click = events["ev-click-3"]
    assert (click.event_type, click.delivery_id, click.arm, click.url) == (
        EventType.CLICKED,
        "d3",
        "personalized",
        "https://app.example/s/1",
    )
    assert orjson.loads(click.raw) == batch[4]


def test_a_ledger_factory_is_opened_at_startup(
    ledger: Ledger, ledger_url: str, serve_receiver: ServeReceiver
):
    with serve_receiver(lambda: Ledger.connect(ledger_url)) as receiver:
        response = receiver.post(orjson.dumps([sg_event(1), sg_event(2)]))
    assert response.status_code == 200, response.text
    assert set(stored(ledger)) == {"ev-delivered-1", "ev-delivered-2"}


def test_unknown_event_is_kept_as_unknown_with_its_raw(ledger, serve_receiver: ServeReceiver):
    raw = sg_event(7, "teleported", galaxy={"far": ["away"]})
    with serve_receiver(ledger) as receiver:
        assert receiver.post(orjson.dumps([raw])).status_code == 200
    event = stored(ledger)["ev-teleported-7"]
    assert event.event_type is EventType.UNKNOWN
    assert orjson.loads(event.raw)["galaxy"] == {"far": ["away"]}


def test_suppressions_follow_bounces_complaints_and_unsubscribes(ledger, serve_receiver):
    batch = [
        sg_event(1, "bounce", type="bounce", email="Hard@Example.com"),
        sg_event(2, "bounce", type="blocked"),  # suppressed under its own reason
        sg_event(3, "spamreport"),
        sg_event(4, "unsubscribe"),
        sg_event(5, "group_unsubscribe", asm_group_id=42),
        sg_event(6, "group_unsubscribe", asm_group_id=42, timestamp=TS - 60),
        sg_event(6, "group_resubscribe", asm_group_id=42),  # later: lifts it
        sg_event(7, "dropped", reason="Bounced Address"),
        sg_event(8, "delivered"),
    ]
    addresses = [f"user{n}@example.com" for n in range(2, 9)] + ["hard@example.com"]
    with serve_receiver(ledger) as receiver:
        response = receiver.post(orjson.dumps(batch))
        assert response.status_code == 200, response.text
        assert ledger.suppressions.suppressed(addresses) == {
            "hard@example.com",
            "user2@example.com",
            "user3@example.com",
            "user4@example.com",
            "user5@example.com",
            "user7@example.com",
        }
        resubscribe = [sg_event(5, "group_resubscribe", asm_group_id=42, timestamp=TS + 60)]
        assert receiver.post(orjson.dumps(resubscribe)).status_code == 200
    assert "user5@example.com" not in ledger.suppressions.suppressed(addresses)
    assert stored(ledger)["ev-bounce-2"].event_type is EventType.BLOCKED
    assert ("user2@example.com", "blocked") in {
        (s.email, s.reason) for s in ledger.suppressions.list_suppressions()
    }


def test_refusals_store_nothing(ledger, serve_receiver: ServeReceiver):
    body = orjson.dumps([sg_event(1)])
    with serve_receiver(ledger, max_body_bytes=4096) as receiver:
        good = receiver.signer.headers(body)
        wrong = receiver.signer.headers(body + b" ")[SIGNATURE_HEADER]
        answers = {
            "missing headers": receiver.post(body, sign=False),
            "only signature": receiver.post(
                body, sign=False, headers={SIGNATURE_HEADER: good[SIGNATURE_HEADER]}
            ),
            "wrong signature": receiver.post(body, headers={SIGNATURE_HEADER: wrong}),
            "garbage signature": receiver.post(body, headers={SIGNATURE_HEADER: "%%%=="}),
            "signed by another key": receiver.post(
                body,
                sign=False,
                headers={**good, SIGNATURE_HEADER: base64.b64encode(b"0" * 70).decode()},
            ),
            "stale": receiver.post(body, timestamp=TS - 3600),
            "from the future": receiver.post(body, timestamp=TS + 3600),
            "oversize": receiver.post(b"[" + b" " * 5000 + b"]"),
        }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "missing headers": 401,
        "only signature": 401,
        "wrong signature": 403,
        "garbage signature": 403,
        "signed by another key": 403,
        "stale": 403,
        "from the future": 403,
        "oversize": 413,
    }
    assert stored(ledger) == {}


def test_oversize_is_refused_while_streaming(serve_receiver: ServeReceiver):
    sink = MemorySink()

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(64):
            yield b" " * 1024

    with serve_receiver(sink, max_body_bytes=10_000) as receiver:
        response = receiver.client.post(
            receiver.url + "/webhooks/sendgrid",
            content=chunks(),
            headers=receiver.signer.headers(b""),
        )
    assert response.status_code == 413
    assert sink.events.stored == {}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"event": "open"}', "not a JSON array"),
        (b"[1, 2, 3]", "no valid event"),
        (orjson.dumps([{"event": "open", "timestamp": TS}]), "no valid event"),
        (b"[\xff]", "not UTF-8"),
        (b"", "not JSON"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, why: str, serve_receiver: ServeReceiver):
    sink = MemorySink()
    with serve_receiver(sink) as receiver:
        response = receiver.post(body)
    assert response.status_code == 400
    assert why in response.json()["error"]
    assert sink.events.stored == {}


def test_partly_invalid_batch_stores_the_good_events(serve_receiver: ServeReceiver):
    sink = MemorySink()
    body = orjson.dumps(
        [
            sg_event(1),
            {"event": "open"},
            "junk",
            {"event": "account_status_change", "type": "compliance_suspend"},
        ]
    )
    with serve_receiver(sink) as receiver:
        response = receiver.post(body)
    assert response.status_code == 200
    assert response.json()["rejected"] == {"no_email": 1, "not_an_object": 1}
    assert response.json()["ignored"] == {"account_event": 1}
    assert list(sink.events.stored) == ["ev-delivered-1"]


def test_store_failure_is_503_and_the_retry_loses_nothing(serve_receiver: ServeReceiver):
    sink = MemorySink(MemoryEvents(fail=True))
    body = orjson.dumps([sg_event(1), sg_event(2, "bounce", type="bounce")])
    with serve_receiver(sink) as receiver:
        failed = receiver.post(body)
        sink.events.fail = False
        retried = receiver.post(body)
    assert failed.status_code == 503
    assert "database is down" not in failed.text
    assert retried.status_code == 200
    assert set(sink.events.stored) == {"ev-delivered-1", "ev-bounce-2"}
    assert ("user2@example.com", "bounce") in sink.suppressions.rows


def test_credentials_when_configured(
    serve_receiver: ServeReceiver, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    sink = MemorySink()
    creds = Credentials(bearer_tokens=("t0ken",), basic=("sendgrid", "pa55"))
    body = orjson.dumps([sg_event(1)])
    basic = "Basic " + base64.b64encode(b"sendgrid:pa55").decode()
    with serve_receiver(sink, credentials=creds) as receiver:
        missing = receiver.post(body)
        wrong = receiver.post(body, headers={"Authorization": "Bearer nope"})
        bearer = receiver.post(body, headers={"Authorization": "Bearer t0ken"})
        basic_ok = receiver.post(body, headers={"Authorization": basic})
        unsigned = receiver.post(body, sign=False, headers={"Authorization": "Bearer t0ken"})
    statuses = [r.status_code for r in (missing, wrong, bearer, basic_ok, unsigned)]
    assert statuses == [401, 401, 200, 200, 401]
    assert "refused webhook request: 401" in caplog.text
    for secret in ("t0ken", "pa55", "nope", basic):
        assert secret not in caplog.text
        assert all(secret not in r.text for r in (missing, wrong, unsigned))


def test_insecure_mode_accepts_unsigned(serve_receiver: ServeReceiver):
    sink = MemorySink()
    with serve_receiver(sink, public_key=None, insecure_no_signature=True) as receiver:
        response = receiver.post(orjson.dumps([sg_event(1)]), sign=False)
    assert response.status_code == 200
    assert list(sink.events.stored) == ["ev-delivered-1"]


def test_healthz_and_wrong_method(serve_receiver: ServeReceiver):
    with serve_receiver(MemorySink()) as receiver:
        assert receiver.client.get(receiver.url + "/healthz").json() == {"status": "ok"}
        assert receiver.client.get(receiver.url + "/webhooks/sendgrid").status_code == 405


header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)  # h11 refuses surrounding spaces before they reach us
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_like.map(lambda v: json.dumps(v).encode()),  # big integers too
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "email",
                    "timestamp",
                    "sg_event_id",
                    "type",
                    "asm_group_id",
                    "sg_machine_open",
                ]
            ),
            json_like,
        ),
        max_size=5,
    ).map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module")
def junk_receiver() -> Iterator[Receiver]:
    """One receiver for every hypothesis example (a server per example would be slow)."""
    with running_receiver(MemorySink(), WebhookSigner()) as receiver:
        yield receiver


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    sign=st.booleans(),
    signature=header_values,
    timestamp=header_values,
    authorization=header_values,
)
def test_junk_never_gets_a_500(
    junk_receiver: Receiver,
    body: bytes,
    sign: bool,
    signature: str,
    timestamp: str,
    authorization: str,
) -> None:
    junk_headers = {
        SIGNATURE_HEADER: signature,
        TIMESTAMP_HEADER: timestamp,
        "Authorization": authorization,
    }
    status = junk_receiver.post(body, sign=sign, headers={} if sign else junk_headers).status_code
    assert status in {200, 400, 401, 403}, status
    if not sign:
        assert status != 200


# ------------------------------------------------------------------ events the ledger cannot hold

LONG = {"sg_event_id": 201, "email": 321, "delivery_id": 33, "arm": 101, "campaign": 201}
LONG |= {"edition": 33, "sg_message_id": 201}


def _long(key: str) -> dict[str, object]:
    if key == "email":
        return {"email": "a" * (LONG[key] - len("@example.com")) + "@example.com"}
    return {key: "x" * LONG[key]}


# (fields of the odd event, its reason in rejected_events; None: stored as an event)
ODD_EVENTS: list[tuple[dict[str, object], str | None]] = [
    *((_long(key), f"too_long_{key}") for key in LONG if key != "sg_event_id"),
    (_long("sg_event_id"), None),  # the key becomes sha256: of it
    ({"email": "nul\x00@example.com"}, "unstorable_email"),
    ({"arm": "per\x00sonalized"}, "unstorable_arm"),
    ({"reason": "550 no\x00such user"}, None),  # free text: the NUL becomes U+FFFD
    ({"url": "https://x.example/\x00"}, None),
    ({"sg_event_id": "ev\x00nul"}, None),
]


@pytest.mark.parametrize(("odd", "reason"), ODD_EVENTS, ids=[str(sorted(f)) for f, _ in ODD_EVENTS])
def test_an_event_the_ledger_cannot_hold_never_takes_its_batch_down(
    ledger: Ledger, serve_receiver: ServeReceiver, odd: dict[str, object], reason: str | None
):
    batch = [sg_event(1), sg_event(99, "bounce", type="bounce", **odd), sg_event(2, "open")]
    body = orjson.dumps(batch)
    with serve_receiver(ledger) as receiver:
        first = receiver.post(body)
        again = receiver.post(body)  # SendGrid's retry adds nothing
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    events = stored(ledger)
    assert {"ev-delivered-1", "ev-open-2"} <= set(events)
    kept = list(ledger.events.rejected())
    if reason is None:
        assert first.json()["stored"] == 3 and first.json()["kept_raw"] == 0
        (odd_event,) = (e for e in events.values() if e.email == batch[1]["email"])
        assert orjson.loads(odd_event.raw) == batch[1]  # the raw keeps what SendGrid sent
        assert "\x00" not in (odd_event.reason or "") + (odd_event.url or "")
        assert kept == []
    else:
        assert first.json()["stored"] == 2
        assert first.json()["kept_raw"] == 1 and first.json()["rejected"] == {reason: 1}
        assert [(k.reason, orjson.loads(k.raw)) for k in kept] == [(reason, batch[1])]
        assert ledger.events.rejected_counts() == {reason: 1}
    assert again.json()["stored"] == 0


def test_numbers_beyond_a_double_set_aside_only_their_event(
    ledger: Ledger, serve_receiver: ServeReceiver
):
    good = orjson.dumps(sg_event(1))
    when = b'{"email":"x@example.com","event":"open","timestamp":1e400}'  # no usable time
    digits = orjson.dumps(sg_event(2))[:-1] + b',"n":' + b"9" * 5000 + b"}"
    huge = orjson.dumps(sg_event(3))[:-1] + b',"asm_group_id":' + b"7" * 400 + b"}"
    with serve_receiver(ledger) as receiver:
        response = receiver.post(b"[" + b",".join([good, when, digits, huge]) + b"]")
    assert response.status_code == 200, response.text
    assert set(stored(ledger)) == {"ev-delivered-1"}
    assert response.json()["rejected"] == {"bad_timestamp": 1, "number_out_of_range": 2}
    assert ledger.events.rejected_counts() == {"number_out_of_range": 2}
    assert response.json()["kept_raw"] == 2


def test_long_group_ids_and_event_ids_still_suppress(ledger: Ledger, serve_receiver):
    group = "g" * 300
    batch = [
        sg_event(1, "group_unsubscribe", asm_group_id=group, sg_event_id="e" * 200),
        sg_event(2, "spamreport", sg_event_id="s" * 200),
    ]
    with serve_receiver(ledger) as receiver:
        assert receiver.post(orjson.dumps(batch)).status_code == 200
        assert ledger.suppressions.suppressed(["user1@example.com", "user2@example.com"]) == {
            "user1@example.com",
            "user2@example.com",
        }
        later = [sg_event(1, "group_resubscribe", asm_group_id=group, timestamp=TS + 60)]
        assert receiver.post(orjson.dumps(later)).status_code == 200
    assert ledger.suppressions.suppressed(["user1@example.com"]) == set()


def _repeat(piece: str, n: int) -> str:
    return piece * n


odd_text = st.one_of(
    st.text(max_size=20),
    st.builds(
        _repeat, st.sampled_from(["x", "é", "\x00", "İ", "\ud800", "𝄞", " "]), st.integers(0, 420)
    ),
    st.text(st.sampled_from("a\x00\ud800\udfffé𝄞@ ."), max_size=40),
)
odd_values = st.one_of(
    odd_text,
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # inf and nan: json.dumps writes Infinity and NaN
    st.booleans(),
    st.none(),
    st.lists(odd_text, max_size=2),
    st.dictionaries(odd_text, odd_text, max_size=2),
)
EVENT_KEYS = [
    "event",
    "email",
    "timestamp",
    "sg_event_id",
    "sg_message_id",
    "delivery_id",
    "campaign",
    "edition",
    "arm",
    "type",
    "reason",
    "url",
    "asm_group_id",
    "sg_machine_open",
]
odd_events = st.dictionaries(st.sampled_from(EVENT_KEYS), odd_values, max_size=6).map(
    lambda fields: sg_event(0, "bounce", type="bounce") | fields
)


@pytest.fixture
def ledger_receiver(ledger: Ledger, signer: WebhookSigner) -> Iterator[tuple[Ledger, Receiver]]:
    """One receiver on the real ledger for every hypothesis example of a test."""
    with running_receiver(ledger, signer) as receiver:
        yield ledger, receiver


NEIGHBOURS = iter(range(10**9))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(odd=st.lists(odd_events, min_size=1, max_size=3), at=st.integers(0, 3))
def test_odd_events_never_get_a_5xx_nor_lose_a_valid_neighbour(
    ledger_receiver: tuple[Ledger, Receiver], odd: list[dict[str, object]], at: int
) -> None:
    ledger, receiver = ledger_receiver
    n = next(NEIGHBOURS)
    neighbour = sg_event(n, sg_event_id=f"neighbour-{n}", delivery_id=f"n{n}")
    batch = [*odd[:at], neighbour, *odd[at:]]
    response = receiver.post(json.dumps(batch).encode())  # ensure_ascii: surrogates escaped
    assert response.status_code == 200, response.text
    assert ledger.events.processed_delivery_ids([f"n{n}"]) == {f"n{n}"}
    counts = response.json()
    assert counts["kept_raw"] <= counts["received"]


@pytest.mark.parametrize("clients", [1, 3])
def test_a_client_gone_mid_body_is_one_log_line_and_the_server_keeps_serving(
    ledger: Ledger,
    serve_receiver: ServeReceiver,
    caplog: pytest.LogCaptureFixture,
    clients: int,
):
    body = orjson.dumps([sg_event(n) for n in range(200)])
    with serve_receiver(ledger) as receiver:
        uvicorn_log = logging.getLogger("uvicorn")
        uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not reach the root's
        try:
            with caplog.at_level(logging.DEBUG):
                for _ in range(clients):
                    half_a_body(
                        receiver.url, "/webhooks/sendgrid", body, receiver.signer.headers(body)
                    )
                time.sleep(0.3)
                after = receiver.post(orjson.dumps([sg_event(1000)]))
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    assert after.status_code == 200, after.text
    assert set(stored(ledger)) == {"ev-delivered-1000"}  # nothing of the broken body
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert gone and all(r.levelno in (logging.INFO, logging.WARNING) for r in gone)
    assert all(r.exc_info is None for r in caplog.records)
