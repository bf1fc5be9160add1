"""The Personalize batch job: botocore's Stubber on the real service model, moto's S3 server,
and a local endpoint that answers the Personalize API badly."""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, ConfigError
from calm_mail.ops.personalize_job import (
    BatchJobFailed,
    PersonalizeCallFailed,
    job_name,
    run_batch_job,
    start_batch_job,
    wait_for_job,
)
from tests.ops.conftest import make_root

SV = "arn:aws:personalize:us-east-1:123456789012:solution/winddown/abcdef12"
ROLE = "arn:aws:iam::123456789012:role/PersonalizeBatch"
FILTER = "arn:aws:personalize:us-east-1:123456789012:filter/no-kids"
EDITION = Edition.parse("2026-W48")
NAME = "weekly_winddown-2026-W48"
ARN = f"arn:aws:personalize:us-east-1:123456789012:batch-inference-job/{NAME}"
SECTION = f"""
[personalize]
solution_version_arn = "{SV}"
role_arn = "{ROLE}"
filter_arn = "{FILTER}"
filter_values = {{ LANG = "\\"en\\"" }}
num_results = 200
input_prefix = "s3://calm-recs/{{edition}}/in/"
output_prefix = "s3://calm-recs/{{edition}}/out/"
poll_interval_s = 30
timeout_s = 120
"""


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return load_campaign("weekly_winddown", make_root(tmp_path, extra=SECTION))


@pytest.fixture
def personalize() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client(
        "personalize",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def _create_request() -> dict[str, object]:
    return {
        "jobName": NAME,
        "solutionVersionArn": SV,
        "roleArn": ROLE,
        "filterArn": FILTER,
        "numResults": 200,
        "jobInput": {"s3DataSource": {"path": "s3://calm-recs/2026-W48/in/"}},
        "jobOutput": {"s3DataDestination": {"path": "s3://calm-recs/2026-W48/out/"}},
    }


def _listed(*jobs: dict[str, object]) -> dict[str, object]:
    return {"batchInferenceJobs": list(jobs)}


def _describe(status: str, **extra: object) -> dict[str, object]:
    job = {
        "jobName": NAME,
        "batchInferenceJobArn": ARN,
        "status": status,
        "jobOutput": {"s3DataDestination": {"path": "s3://calm-recs/2026-W48/out/"}},
        **extra,
    }
    return {"batchInferenceJob": job}


def test_starts_the_job_and_uploads_the_input(
    campaign: Campaign, personalize: tuple[object, Stubber], s3_server: str
) -> None:
    client, stub = personalize
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="calm-recs")
    stub.add_response("list_batch_inference_jobs", _listed(), {"solutionVersionArn": SV})
    stub.add_response(
        "create_batch_inference_job", {"batchInferenceJobArn": ARN}, _create_request()
    )
    arn = start_batch_job(client, campaign, EDITION, s3=s3, user_ids=iter(["u1", "u2", "u3"]))
    assert arn == ARN
    body = s3.get_object(Bucket="calm-recs", Key="2026-W48/in/users.json")["Body"].read()
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert lines == [{"userId": u, "filterValues": {"LANG": '"en"'}} for u in ("u1", "u2", "u3")]


def test_a_rerun_finds_the_existing_job(
    campaign: Campaign, personalize: tuple[object, Stubber]
) -> None:
    client, stub = personalize
    other = {
        "jobName": "weekly_winddown-2026-W47",
        "batchInferenceJobArn": ARN + "x",
        "status": "ACTIVE",
    }
    mine = {"jobName": NAME, "batchInferenceJobArn": ARN, "status": "IN PROGRESS"}
    # two pages: the paginator follows nextToken
    stub.add_response(
        "list_batch_inference_jobs",
        {**_listed(other), "nextToken": "t1"},
        {"solutionVersionArn": SV},
    )
    stub.add_response(
        "list_batch_inference_jobs", _listed(mine), {"solutionVersionArn": SV, "nextToken": "t1"}
    )
    assert start_batch_job(client, campaign, EDITION) == ARN  # no create call was stubbed


def test_already_exists_is_answered_by_the_existing_job(
    campaign: Campaign, personalize: tuple[object, Stubber]
) -> None:
    client, stub = personalize
    stub.add_response("list_batch_inference_jobs", _listed(), {"solutionVersionArn": SV})
    stub.add_client_error(
        "create_batch_inference_job",
        service_error_code="ResourceAlreadyExistsException",
        service_message="exists",
        expected_params=_create_request(),
    )
    stub.add_response(
        "list_batch_inference_jobs",
        _listed({"jobName": NAME, "batchInferenceJobArn": ARN, "status": "PENDING"}),
        {"solutionVersionArn": SV},
    )
    assert start_batch_job(client, campaign, EDITION) == ARN


def test_other_errors_are_reported(campaign: Campaign, personalize: tuple[object, Stubber]) -> None:
    client, stub = personalize
    stub.add_response("list_batch_inference_jobs", _listed(), {"solutionVersionArn": SV})
    stub.add_client_error(
        "create_batch_inference_job",
        service_error_code="LimitExceededException",
        service_message="too many jobs",
    )
    with pytest.raises(BatchJobFailed, match="LimitExceededException: too many jobs"):
        start_batch_job(client, campaign, EDITION)


def test_polls_until_active(
    campaign: Campaign, personalize: tuple[object, Stubber], s3_server: str
) -> None:
    client, stub = personalize
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="calm-recs")
    stub.add_response("list_batch_inference_jobs", _listed(), {"solutionVersionArn": SV})
    stub.add_response(
        "create_batch_inference_job", {"batchInferenceJobArn": ARN}, _create_request()
    )
    for status in ("PENDING", "IN PROGRESS", "ACTIVE"):
        stub.add_response(
            "describe_batch_inference_job", _describe(status), {"batchInferenceJobArn": ARN}
        )
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    job = run_batch_job(
        client, campaign, EDITION, s3=s3, user_ids=["u1"], sleep=sleep, clock=lambda: clock[0]
    )
    assert job.status == "ACTIVE" and job.output_prefix == "s3://calm-recs/2026-W48/out/"
    assert slept == [30.0, 30.0]


def test_create_failed_raises_with_the_reason(personalize: tuple[object, Stubber]) -> None:
    client, stub = personalize
    stub.add_response(
        "describe_batch_inference_job",
        _describe("CREATE FAILED", failureReason="Input file is empty"),
        {"batchInferenceJobArn": ARN},
    )
    with pytest.raises(BatchJobFailed, match="Input file is empty"):
        wait_for_job(client, ARN, poll_s=1, sleep=lambda s: None)


def test_gives_up_after_the_timeout(personalize: tuple[object, Stubber]) -> None:
    client, stub = personalize
    for _ in range(3):
        stub.add_response(
            "describe_batch_inference_job", _describe("IN PROGRESS"), {"batchInferenceJobArn": ARN}
        )
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    with pytest.raises(BatchJobFailed, match="still IN PROGRESS after 100 s"):
        wait_for_job(client, ARN, poll_s=40, timeout_s=100, sleep=sleep, clock=lambda: clock[0])


def test_num_results_above_500_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, extra=SECTION.replace("num_results = 200", "num_results = 501"))
    with pytest.raises(ConfigError, match=r"personalize\.num_results"):
        load_campaign("weekly_winddown", root)


def test_prefixes_must_be_s3_folders(tmp_path: Path) -> None:
    root = make_root(tmp_path, extra=SECTION.replace("{edition}/in/", "{edition}/in"))
    with pytest.raises(ConfigError, match=r"personalize\.input_prefix"):
        load_campaign("weekly_winddown", root)


@given(
    campaign=st.text(min_size=1, max_size=120),
    week=st.dates(min_value=datetime(2000, 1, 1, tzinfo=UTC).date()),
)
def test_job_names_are_always_valid(campaign: str, week: object) -> None:
    edition = Edition.of(week)  # type: ignore[arg-type]
    try:
        name = job_name(campaign, edition)
    except ConfigError:
        return  # nothing usable left of the name: refused, not sent to AWS
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,62}", name)
    assert name.endswith(edition.key)


# ----------------------------------------------------------------------------- AWS errors
# A real HTTP endpoint that speaks the Personalize API badly: botocore signs, sends and parses
# every request as it would against AWS (moto's server implements no batch inference calls).

ACCESS_KEY = "AKIAABCDEFGHIJKLMNOP"
SECRET_KEY = "very-secret-key-material-0123456789abcdef"


class _Answer:
    """What the endpoint answers next: a status, headers and a body, or a dropped connection."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.headers: dict[str, str] = {}
        self.drop = False
        self.echo_auth = False


class _BadPersonalize(http.server.BaseHTTPRequestHandler):
    answer: _Answer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = self.answer
        if answer.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = answer.body
        if answer.echo_auth:  # a proxy that repeats the request in its error message
            said = f"denied for {self.headers.get('Authorization')} key {SECRET_KEY}"
            body = orjson.dumps({"__type": "AccessDeniedException", "message": said})
        self.send_response(answer.status)
        for key, value in {"Content-Type": "application/x-amz-json-1.1", **answer.headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def bad_endpoint() -> Iterator[tuple[object, _Answer]]:
    """A Personalize client pointed at a local endpoint, and the endpoint's next answer."""
    answer = _Answer()
    handler = type("Handler", (_BadPersonalize,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = boto3.client(
        "personalize",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    try:
        yield client, answer
    finally:
        server.shutdown()
        server.server_close()


def _answer(answer: _Answer, status: int, body: bytes | dict[str, object], **kw: object) -> None:
    answer.status = status
    answer.body = body if isinstance(body, bytes) else orjson.dumps(body)
    answer.headers = {}
    answer.drop = bool(kw.get("drop", False))
    answer.echo_auth = bool(kw.get("echo_auth", False))


def _error_body(code: str, message: str) -> dict[str, object]:
    return {"__type": code, "message": message}


@pytest.mark.parametrize(
    ("code", "exit_code", "hint"),
    [
        ("AccessDeniedException", 2, "AWS credentials"),
        ("UnrecognizedClientException", 2, "AWS credentials"),
        ("ResourceNotFoundException", 2, "solution_version_arn"),
        ("InvalidInputException", 2, "solution_version_arn"),
        ("ThrottlingException", 1, "re-run the edition later"),
        ("LimitExceededException", 1, "re-run the edition later"),
    ],
)
def test_an_aws_error_from_list_is_a_clear_error(
    campaign: Campaign, bad_endpoint: tuple[object, _Answer], code: str, exit_code: int, hint: str
) -> None:
    client, answer = bad_endpoint
    _answer(answer, 400, _error_body(code, "it went wrong"))
    with pytest.raises(PersonalizeCallFailed) as caught:
        start_batch_job(client, campaign, EDITION)
    err = caught.value
    assert (err.operation, err.code, err.exit_code) == ("ListBatchInferenceJobs", code, exit_code)
    assert isinstance(err, CalmMailError) and isinstance(err, BatchJobFailed)
    message = str(err)
    assert f"ListBatchInferenceJobs failed: {code}: it went wrong (HTTP 400)" in message
    assert hint in message


def test_a_server_error_without_json_is_a_clear_error(
    campaign: Campaign, bad_endpoint: tuple[object, _Answer]
) -> None:
    client, answer = bad_endpoint
    _answer(answer, 502, b"<html><body>Bad Gateway</body></html>")
    with pytest.raises(PersonalizeCallFailed, match=r"ListBatchInferenceJobs .*HTTP 502") as c:
        start_batch_job(client, campaign, EDITION)
    assert c.value.retriable and c.value.exit_code == 1


def test_a_dropped_connection_is_a_clear_error(
    campaign: Campaign, bad_endpoint: tuple[object, _Answer]
) -> None:
    client, answer = bad_endpoint
    _answer(answer, 200, b"", drop=True)
    with pytest.raises(PersonalizeCallFailed, match="check the network") as caught:
        start_batch_job(client, campaign, EDITION)
    assert caught.value.operation == "ListBatchInferenceJobs" and caught.value.retriable


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b'{"batchInferenceJobs": "junk"}', b'{"batchInferenceJobs": [1, 2]}'],
)
def test_a_garbled_list_answer_is_a_clear_error(
    campaign: Campaign, bad_endpoint: tuple[object, _Answer], body: bytes
) -> None:
    client, answer = bad_endpoint
    _answer(answer, 200, body)  # botocore reads a body it cannot parse as listing nothing
    with pytest.raises(PersonalizeCallFailed, match=r"(List|Create)BatchInferenceJob") as caught:
        start_batch_job(client, campaign, EDITION)
    assert caught.value.code == "BadResponse"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"batchInferenceJob": "junk"},
        {"batchInferenceJob": {"status": "ACTIVE"}},
        {"batchInferenceJob": {"jobName": NAME, "status": "ACTIVE"}},  # no jobOutput
    ],
)
def test_a_garbled_describe_answer_is_a_clear_error(
    bad_endpoint: tuple[object, _Answer], body: dict[str, object]
) -> None:
    client, answer = bad_endpoint
    _answer(answer, 200, body)
    with pytest.raises(PersonalizeCallFailed, match="DescribeBatchInferenceJob") as caught:
        wait_for_job(client, ARN, poll_s=1, sleep=lambda s: None)
    assert caught.value.code == "BadResponse"


def test_an_aws_error_from_describe_is_a_clear_error(bad_endpoint: tuple[object, _Answer]) -> None:
    client, answer = bad_endpoint
    _answer(answer, 400, _error_body("ResourceNotFoundException", "no such job"))
    with pytest.raises(PersonalizeCallFailed, match="DescribeBatchInferenceJob failed") as caught:
        wait_for_job(client, ARN, poll_s=1, sleep=lambda s: None)
    assert caught.value.exit_code == 2


def test_no_credential_reaches_the_message(
    campaign: Campaign, bad_endpoint: tuple[object, _Answer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    client, answer = bad_endpoint
    _answer(answer, 403, b"", echo_auth=True)
    with pytest.raises(PersonalizeCallFailed) as caught:
        start_batch_job(client, campaign, EDITION)
    message = str(caught.value)
    assert "AccessDeniedException" in message and "Signature=***" in message
    assert ACCESS_KEY not in message and SECRET_KEY not in message
    assert not re.search(r"Signature=[0-9a-f]{8}", message)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.sampled_from([200, 400, 403, 404, 413, 429, 500, 503]),
    code=st.text(max_size=300),
    said=st.text(max_size=5000),
    raw=st.binary(max_size=300),
    as_json=st.booleans(),
)
def test_any_bad_answer_is_a_clear_error(
    campaign: Campaign,
    bad_endpoint: tuple[object, _Answer],
    status: int,
    code: str,
    said: str,
    raw: bytes,
    as_json: bool,
) -> None:
    """Long strings, NUL characters, any bytes, any status: a `PersonalizeCallFailed` with a
    bounded one-line message, or (a 200 that lists nothing) no job."""
    client, answer = bad_endpoint
    _answer(answer, status, _error_body(code, said) if as_json else raw)
    try:
        start_batch_job(client, campaign, EDITION)
    except PersonalizeCallFailed as exc:
        message = str(exc)
        assert "\n" not in message and "\0" not in message and len(message) < 1000
    except BatchJobFailed:
        assert status == 200  # listed nothing, then the create call met the same answer
