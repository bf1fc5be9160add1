"""Every mail/send rule with a failing and a passing body; junk never gives a 500."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.sandbox import SandboxHandle
from tests.sandbox.conftest import AUTH, mail

Body = dict[str, Any]


def send(http: httpx.Client, handle: SandboxHandle, body: object) -> httpx.Response:
    return http.post(f"{handle.url}/v3/mail/send", json=body, headers=AUTH)


def recipients(n: int, per: int = 1) -> list[dict[str, Any]]:
    return [{"to": [{"email": f"u{i}-{j}@example.com"} for j in range(per)]} for i in range(n)]


def with_p(**fields: Any) -> Body:
    body = mail()
    body["personalizations"][0].update(fields)
    return body


NOW = int(time.time())
# rule -> (bad body, expected field, message fragment, good body)
RULES: dict[str, tuple[Body, str, str, Body]] = {
    "personalizations required": (
        {k: v for k, v in mail().items() if k != "personalizations"},
        "personalizations",
        "at least one personalization",
        mail(),
    ),
    "at least one personalization": (
        mail(personalizations=[]),
        "personalizations",
        "at least one personalization",
        mail(),
    ),
    "at most 1000 personalizations": (
        mail(personalizations=recipients(1001)),
        "personalizations",
        "You have provided 1001 personalizations",
        mail(personalizations=recipients(1000)),
    ),
    "at most 1000 recipients": (
        mail(personalizations=recipients(501, per=2)),
        "personalizations",
        "limit of 1000 total recipients",
        mail(personalizations=recipients(500, per=2)),
    ),
    "to required": (
        mail(personalizations=[{"cc": [{"email": "a@example.com"}]}]),
        "personalizations.0.to",
        "to parameter is required",
        mail(),
    ),
    "to not empty": (with_p(to=[]), "personalizations.0.to", "The to array must", mail()),
    "valid to address": (
        with_p(to=[{"email": "nobody"}]),
        "personalizations.0.to.0.email",
        "Does not contain a valid address",
        with_p(to=[{"email": "some.body+x@example.co.uk"}]),
    ),
    "to address length": (
        with_p(to=[{"email": "a" * 310 + "@example.com"}]),
        "personalizations.0.to.0.email",
        "maximum total length of 320",
        with_p(to=[{"email": "a" * 300 + "@example.com"}]),
    ),
    "no repeated address": (
        with_p(to=[{"email": "a@example.com"}], cc=[{"email": "A@example.com"}]),
        "personalizations.0.cc.0.email",
        "more than once",
        with_p(to=[{"email": "a@example.com"}], cc=[{"email": "b@example.com"}]),
    ),
    "no name with a comma": (
        with_p(to=[{"email": "a@example.com", "name": "Doe, Jane"}]),
        "personalizations.0.to.0.name",
        "cannot contain",
        with_p(to=[{"email": "a@example.com", "name": "Jane Doe"}]),
    ),
    "from required": (
        {k: v for k, v in mail().items() if k != "from"},
        "from",
        "must be provided for every email send",
        mail(),
    ),
    "valid from address": (
        mail(**{"from": {"email": "x@"}}),
        "from.email",
        "from email does not contain",
        mail(**{"from": {"email": "x@example.com"}}),
    ),
    "ascii from address": (
        mail(**{"from": {"email": "jos\u00e9@example.com"}}),
        "from.email",
        "Unicode",
        mail(**{"from": {"email": "jose@example.com"}}),
    ),
    "subject required": (
        {k: v for k, v in mail().items() if k != "subject"},
        "subject",
        "subject is required",
        {
            **{k: v for k, v in mail().items() if k != "subject"},
            "personalizations": [{"to": [{"email": "a@example.com"}], "subject": "hi"}],
        },
    ),
    "subject not empty": (mail(subject=""), "subject", "at least one character", mail()),
    "content required": (
        {k: v for k, v in mail().items() if k != "content"},
        "content",
        "content param is required",
        {**{k: v for k, v in mail().items() if k != "content"}, "template_id": "d-abc"},
    ),
    "text/plain before text/html": (
        mail(
            content=[
                {"type": "text/html", "value": "<p>x</p>"},
                {"type": "text/plain", "value": "x"},
            ]
        ),
        "content",
        "text/plain needs to be first",
        mail(),
    ),
    "content value not empty": (
        mail(content=[{"type": "text/plain", "value": ""}]),
        "content.0.value",
        "at least one character",
        mail(content=[{"type": "text/plain", "value": "x"}]),
    ),
    "categories at most 10": (
        mail(categories=[f"c{i}" for i in range(11)]),
        "categories",
        "You provided 11",
        mail(categories=[f"c{i}" for i in range(10)]),
    ),
    "categories unique": (
        mail(categories=["a", "a"]),
        "categories",
        "unique list",
        mail(categories=["a", "b"]),
    ),
    "category length": (
        mail(categories=["x" * 256]),
        "categories.0",
        "255 characters",
        mail(categories=["x" * 255]),
    ),
    "category ascii": (
        mail(categories=["caf\u00e9"]),
        "categories.0",
        "non-ASCII",
        mail(categories=["cafe"]),
    ),
    "custom_args string values": (
        mail(custom_args={"n": 1}),
        "custom_args",
        "must be strings",
        mail(custom_args={"n": "1"}),
    ),
    "custom_args not empty": (
        with_p(custom_args={}),
        "personalizations.0.custom_args",
        "cannot be empty",
        with_p(custom_args={"arm": "a"}),
    ),
    "merged custom_args size": (
        {**with_p(custom_args={"b": "y" * 5000}), "custom_args": {"a": "x" * 5000}},
        "personalizations.0.custom_args",
        "10,000 bytes",
        {**with_p(custom_args={"a": "y" * 5000}), "custom_args": {"a": "x" * 5000}},
    ),
    "send_at integer": (
        mail(send_at="tomorrow"),
        "send_at",
        "Unix timestamp",
        mail(send_at=NOW - 10),
    ),
    "send_at at most 72 h ahead": (
        with_p(send_at=NOW + 73 * 3600),
        "personalizations.0.send_at",
        "72 hours",
        with_p(send_at=NOW + 71 * 3600),
    ),
    "reserved headers": (
        mail(headers={"Subject": "x"}),
        "headers",
        "reserved keys",
        mail(headers={"List-Unsubscribe": "<mailto:u@example.com>"}),
    ),
    "header values strings": (
        with_p(headers={"X-Count": 3}),
        "personalizations.0.headers",
        "must be strings",
        with_p(headers={"X-Count": "3"}),
    ),
    "header keys without spaces": (
        mail(headers={"X Bad": "1"}),
        "headers",
        "empty spaces",
        mail(headers={"X-Ok": "1"}),
    ),
    "reply_to and reply_to_list exclusive": (
        mail(reply_to={"email": "r@example.com"}, reply_to_list=[{"email": "s@example.com"}]),
        "reply_to_list",
        "mutually exclusive",
        mail(reply_to_list=[{"email": "s@example.com"}]),
    ),
    "attachment base64": (
        mail(attachments=[{"content": "not base64!", "filename": "a.txt"}]),
        "attachments.0.content",
        "base64",
        mail(attachments=[{"content": "aGVsbG8=", "filename": "a.txt"}]),
    ),
    "attachment filename required": (
        mail(attachments=[{"content": "aGVsbG8="}]),
        "attachments.0.filename",
        "filename is required",
        mail(attachments=[{"content": "aGVsbG8=", "filename": "a"}]),
    ),
    "asm group id integer": (
        mail(asm={"group_id": "12"}),
        "asm.group_id",
        "must be an integer",
        mail(asm={"group_id": 12}),
    ),
    "asm at most 25 groups to display": (
        mail(asm={"group_id": 1, "groups_to_display": list(range(26))}),
        "asm.groups_to_display",
        "limit of 25",
        mail(asm={"group_id": 1, "groups_to_display": list(range(25))}),
    ),
    "ip pool name length": (
        mail(ip_pool_name="x"),
        "ip_pool_name",
        "IP pool",
        mail(ip_pool_name="pool"),
    ),
    "batch id must exist": (mail(batch_id="unknown-batch"), "batch_id", "invalid batch id", mail()),
    "bypass_list_management alone": (
        mail(
            mail_settings={
                "bypass_list_management": {"enable": True},
                "bypass_spam_management": {"enable": True},
            }
        ),
        "mail_settings.bypass_list_management",
        "cannot be combined",
        mail(mail_settings={"bypass_list_management": {"enable": True}}),
    ),
    "sandbox enable boolean": (
        mail(mail_settings={"sandbox_mode": {"enable": "yes"}}),
        "mail_settings.sandbox_mode.enable",
        "boolean",
        mail(mail_settings={"footer": {"enable": False}}),
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_fails_and_passes(http: httpx.Client, sandbox: SandboxHandle, rule: str) -> None:
    bad, field, fragment, good = RULES[rule]
    refused = send(http, sandbox, bad)
    assert refused.status_code == 400, refused.text
    errors = refused.json()["errors"]
    matching = [e for e in errors if e["field"] == field and fragment in e["message"]]
    assert matching, errors
    assert matching[0]["help"] is None or matching[0]["help"].startswith("http://sendgrid.com/")
    accepted = send(http, sandbox, good)
    assert accepted.status_code == 202, accepted.text


def test_unknown_keys_and_helper_extras_are_accepted(
    http: httpx.Client, sandbox: SandboxHandle
) -> None:
    body = mail(sections={"s": "v"}, spam_check={"enable": False}, something_new=[1, 2])
    body["mail_settings"] = {"bcc": {"enable": False}}
    assert send(http, sandbox, body).status_code == 202


def test_several_errors_at_once_with_dotted_paths(
    http: httpx.Client, sandbox: SandboxHandle
) -> None:
    body = mail(categories=["a", "a"], **{"from": {"email": "bad"}})
    body["personalizations"] = [
        {"to": [{"email": "ok@example.com"}, {"email": "nope"}]},
        {"to": [{"email": "ok@example.com"}]},
    ]
    errors = send(http, sandbox, body).json()["errors"]
    fields = {e["field"] for e in errors}
    assert {
        "categories",
        "from.email",
        "personalizations.0.to.1.email",
        "personalizations.1.to.0.email",
    } <= fields


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "to",
                    "email",
                    "name",
                    "subject",
                    "content",
                    "type",
                    "value",
                    "custom_args",
                    "send_at",
                    "headers",
                    "categories",
                    "from",
                    "personalizations",
                    "batch_id",
                    "asm",
                    "group_id",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


def _mutations() -> st.SearchStrategy[Callable[[Body], Body]]:
    def put(path: tuple[str, ...], value: Any) -> Callable[[Body], Body]:
        def apply(body: Body) -> Body:
            node: Any = body
            for key in path[:-1]:
                node = node[key] if not isinstance(node, list) else node[0]
            if isinstance(node, list):
                node[0] = value
            else:
                node[path[-1]] = value
            return body

        return apply

    paths = st.sampled_from(
        [
            ("subject",),
            ("from",),
            ("from", "email"),
            ("personalizations",),
            ("personalizations", "0"),
            ("personalizations", "0", "to"),
            ("personalizations", "0", "custom_args"),
            ("content",),
            ("categories",),
            ("headers",),
            ("send_at",),
            ("asm",),
            ("attachments",),
            ("reply_to",),
            ("mail_settings",),
        ]
    )
    return st.builds(put, paths, json_values)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=json_values)
def test_junk_bodies_never_500(http: httpx.Client, sandbox: SandboxHandle, junk: Any) -> None:
    assert send(http, sandbox, junk).status_code in (400, 413, 415)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutate=_mutations())
def test_mutated_bodies_never_500(
    http: httpx.Client, sandbox: SandboxHandle, mutate: Callable[[Body], Body]
) -> None:
    response = send(http, sandbox, mutate(mail()))
    assert response.status_code in (202, 400, 413, 415), response.text
    if response.status_code == 400:
        assert all(set(e) == {"message", "field", "help"} for e in response.json()["errors"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_500(http: httpx.Client, sandbox: SandboxHandle, raw: bytes) -> None:
    response = http.post(f"{sandbox.url}/v3/mail/send", content=raw, headers=AUTH)
    assert response.status_code in (400, 413, 415)
