"""The Personalize batch job: botocore's Stubber on the real service model, moto's S3 server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.edition import Edition
from calm_mail.errors import ConfigError
from calm_mail.ops.personalize_job import (
    BatchJobFailed,
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
