"""The optional Personalize batch inference step of an edition (``[personalize]`` in a campaign).

`run_batch_job` uploads the edition's input (one ``{"userId": ...}`` JSON line per eligible
user) to the input prefix, starts ``create_batch_inference_job`` and polls
``describe_batch_inference_job`` until ACTIVE or CREATE FAILED — boto3 has no waiter for
Personalize. The job name is derived from campaign and edition, so a re-run for the same edition
finds the job it started (``list_batch_inference_jobs``) instead of starting a second one, and
``ResourceAlreadyExistsException`` (a race with another worker) is answered the same way.
Every other AWS failure (an error code, a dropped connection, an answer botocore cannot parse or
that lacks what the step reads) becomes `PersonalizeCallFailed`, naming the operation, the AWS
error code and what to check; never a botocore traceback, never a credential.
Personalize writes ``<input file>.out`` under the output prefix, which defaults to the campaign's
``inputs.recommendations``: the planner reads it from there.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from calm_mail.campaign import Campaign, PersonalizeJob
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, ConfigError, InputError

log = logging.getLogger(__name__)

MAX_NUM_RESULTS = 500  # the only documented maximum (GetRecommendations); the model sets none
INPUT_FILE = "users.json"
_JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]*$")
ACTIVE, FAILED = "ACTIVE", "CREATE FAILED"


class BatchJobFailed(CalmMailError):
    """Personalize could not create the edition's batch inference job."""


class PersonalizeCallFailed(BatchJobFailed):
    """An AWS call of the batch step failed. `operation` is the API name, `code` the AWS error
    code (``ConnectionError``, ``BadResponse`` when there is none), `retriable` whether a
    re-run may succeed as it is. Exit 2 when the campaign or the credentials must change
    (access, a wrong ARN, a refused setting), else 1."""

    def __init__(self, operation: str, code: str, message: str, *, retriable: bool) -> None:
        self.operation = operation
        self.code = code
        self.retriable = retriable
        self.exit_code = 1 if retriable else 2
        super().__init__(message)


# What botocore's parser raises itself on an answer of the wrong shape (a string for an object).
_GARBLED = (AttributeError, TypeError, ValueError)

# AWS error codes by what the operator should check.
_ACCESS = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "ExpiredToken",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "NotAuthorized",
    }
)
_SETTINGS = frozenset(
    {"ResourceNotFoundException", "InvalidInputException", "ValidationException", "NoSuchBucket"}
)
_HINT_ACCESS = (
    "check the AWS credentials and region, and that the role may call Personalize and read and "
    "write the S3 prefixes"
)
_HINT_SETTINGS = (
    "check [personalize] in the campaign (solution_version_arn, role_arn, filter_arn, the S3 "
    "prefixes)"
)
_HINT_RETRY = (
    "AWS is busy or failing; re-run the edition later (the job name is stable, so a re-run "
    "finds the same job)"
)
_HINT_CONNECT = (
    "check the network, the region and AWS_ENDPOINT_URL; re-run the edition when AWS answers"
)
_MAX_MESSAGE = 300
_SECRET_PARAM = re.compile(
    r"((?:Credential|Signature|X-Amz-Security-Token|X-Amz-Credential|X-Amz-Signature)=)[^,\s&\"']+",
    re.IGNORECASE,
)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchJob:
    arn: str
    name: str
    status: str
    output_prefix: str
    failure_reason: str | None = None


def job_name(campaign: str, edition: Edition | str) -> str:
    """``weekly_winddown-2026-W48``: 1-63 chars of ``[a-zA-Z0-9][a-zA-Z0-9-_]*``."""
    name = re.sub(r"[^a-zA-Z0-9\-_]", "-", f"{campaign}-{edition}").lstrip("-_")
    # Keep the edition whole: truncate the campaign part, never the week.
    if len(name) > 63:
        tail = f"-{edition}"
        name = name[: 63 - len(tail)].rstrip("-_") + tail
    if not _JOB_NAME.match(name):
        raise ConfigError(f"cannot derive a Personalize job name from {campaign!r}")
    return name


def settings(campaign: Campaign) -> PersonalizeJob:
    cfg = campaign.personalize
    if cfg is None or not cfg.enabled:
        raise ConfigError(f"{campaign.path}: [personalize] is not configured or not enabled")
    if cfg.num_results > MAX_NUM_RESULTS:
        raise ConfigError(
            f"{campaign.path}: personalize.num_results = {cfg.num_results}: at most "
            f"{MAX_NUM_RESULTS}"
        )
    return cfg


def prefixes(campaign: Campaign, edition: Edition) -> tuple[str, str]:
    """(input prefix, output prefix) of the edition, both s3:// and ending in '/'."""
    cfg = settings(campaign)
    inp = campaign.resolve(cfg.input_prefix, edition)
    out = campaign.resolve(cfg.output_prefix or campaign.inputs.recommendations, edition)
    for key, value in (("input_prefix", inp), ("output_prefix", out)):
        if not (value.startswith("s3://") and value.endswith("/")):
            raise ConfigError(
                f"{campaign.path}: personalize.{key} = {value!r}: must be s3://… ending in '/'"
            )
    return inp, out


def upload_input(
    s3: Any,
    input_prefix: str,
    user_ids: Iterable[str],
    filter_values: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Write the batch input (JSON Lines) under `input_prefix`; return (its URI, users).

    Streams through a spooled temp file, so a large audience never sits in memory.
    """
    bucket, _, key_prefix = input_prefix.removeprefix("s3://").partition("/")
    key = key_prefix + INPUT_FILE
    extra = {"filterValues": dict(filter_values)} if filter_values else {}
    count = 0
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        for user_id in user_ids:
            spool.write(orjson.dumps({"userId": user_id, **extra}) + b"\n")
            count += 1
        spool.seek(0)
        s3.upload_fileobj(spool, bucket, key)
    return f"s3://{bucket}/{key}", count


def find_job(client: Any, solution_version_arn: str, name: str) -> dict[str, Any] | None:
    """The batch inference job named `name` of this solution version, if one exists."""
    operation = "ListBatchInferenceJobs"
    try:
        pages = client.get_paginator("list_batch_inference_jobs").paginate(
            solutionVersionArn=solution_version_arn
        )
        for page in pages:
            for job in page.get("batchInferenceJobs", ()):
                if job.get("jobName") == name:
                    return _job_with(dict(job), operation, "batchInferenceJobArn", "status")
    except _aws_errors() as exc:
        raise_aws_error(exc, operation)
    except _GARBLED as exc:  # a page that is not the documented shape
        raise _bad_answer(operation, "batchInferenceJobs") from exc
    return None


def start_batch_job(
    client: Any,
    campaign: Campaign,
    edition: Edition,
    *,
    s3: Any = None,
    user_ids: Iterable[str] | None = None,
) -> str:
    """Start (or find) the edition's batch inference job; return its ARN. Idempotent.

    With `s3` and `user_ids`, the input file is uploaded first (only when no job exists yet).
    """
    from botocore.exceptions import ClientError  # AWS only: botocore is slow to import

    cfg = settings(campaign)
    name = job_name(campaign.name, edition)
    existing = find_job(client, cfg.solution_version_arn, name)
    if existing is not None:
        log.info("Personalize job %s exists (%s); not starting another", name, existing["status"])
        return str(existing["batchInferenceJobArn"])
    inp, out = prefixes(campaign, edition)
    if s3 is not None and user_ids is not None:
        uri, count = _upload(s3, inp, user_ids, cfg.filter_values or None)
        if count == 0:
            raise InputError("no eligible users to ask Personalize about", path=uri)
    request: dict[str, Any] = {
        "jobName": name,
        "solutionVersionArn": cfg.solution_version_arn,
        "roleArn": cfg.role_arn,
        "numResults": cfg.num_results,
        "jobInput": {"s3DataSource": {"path": inp}},
        "jobOutput": {"s3DataDestination": {"path": out}},
    }
    if cfg.filter_arn:
        request["filterArn"] = cfg.filter_arn
    operation = "CreateBatchInferenceJob"
    try:
        answer = client.create_batch_inference_job(**request)
        return str(_job_with(answer, operation, "batchInferenceJobArn")["batchInferenceJobArn"])
    except ClientError as exc:
        if _code(exc) != "ResourceAlreadyExistsException":
            raise_aws_error(exc, operation, job=name)
    except _aws_errors() as exc:
        raise_aws_error(exc, operation, job=name)
    except _GARBLED as exc:
        raise _bad_answer(operation, "batchInferenceJobArn") from exc
    existing = find_job(client, cfg.solution_version_arn, name)  # another worker won the race
    if existing is None:
        raise BatchJobFailed(f"Personalize says job {name} exists but does not list it")
    return str(existing["batchInferenceJobArn"])


def wait_for_job(
    client: Any,
    arn: str,
    *,
    poll_s: float = 60.0,
    timeout_s: float = 3 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BatchJob:
    """Poll until ACTIVE (returned) or CREATE FAILED (`BatchJobFailed` with the reason).

    Raises `BatchJobFailed` too when `timeout_s` passes first; the job keeps running at AWS
    and a re-run of the edition waits for the same job again.
    """
    deadline = clock() + timeout_s
    while True:
        job = _describe(client, arn)
        status = job["status"]
        if status == ACTIVE:
            return BatchJob(arn=arn, name=job["jobName"], status=status, output_prefix=_output(job))
        if status == FAILED:
            reason = job.get("failureReason") or "no reason given"
            raise BatchJobFailed(f"Personalize job {job['jobName']} failed: {reason}")
        if clock() + poll_s > deadline:
            raise BatchJobFailed(
                f"Personalize job {job['jobName']} still {status} after {timeout_s:.0f} s; "
                "re-run the edition later to pick it up"
            )
        log.info("Personalize job %s is %s; next look in %.0f s", job["jobName"], status, poll_s)
        sleep(poll_s)


def run_batch_job(
    client: Any,
    campaign: Campaign,
    edition: Edition,
    *,
    s3: Any,
    user_ids: Iterable[str],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BatchJob:
    """Upload the input, start (or find) the edition's job and wait for it."""
    cfg = settings(campaign)
    arn = start_batch_job(client, campaign, edition, s3=s3, user_ids=user_ids)
    return wait_for_job(
        client, arn, poll_s=cfg.poll_interval_s, timeout_s=cfg.timeout_s, sleep=sleep, clock=clock
    )


def _upload(
    s3: Any, input_prefix: str, user_ids: Iterable[str], filter_values: Mapping[str, str] | None
) -> tuple[str, int]:
    """`upload_input`, its AWS failures as `PersonalizeCallFailed`."""
    from boto3.exceptions import S3UploadFailedError

    try:
        return upload_input(s3, input_prefix, user_ids, filter_values)
    except (S3UploadFailedError, *_aws_errors()) as exc:
        inner = exc.__cause__ or exc.__context__ if isinstance(exc, S3UploadFailedError) else None
        raise_aws_error(inner or exc, f"S3 upload to {input_prefix}")


def _describe(client: Any, arn: str) -> dict[str, Any]:
    operation = "DescribeBatchInferenceJob"
    try:
        answer = client.describe_batch_inference_job(batchInferenceJobArn=arn)
    except _aws_errors() as exc:
        raise_aws_error(exc, operation)
    except _GARBLED as exc:
        raise _bad_answer(operation, "batchInferenceJob") from exc
    job = answer.get("batchInferenceJob") if isinstance(answer, dict) else None
    if not isinstance(job, dict):
        raise _bad_answer(operation, "batchInferenceJob")
    return _job_with(job, operation, "jobName", "status")


def _output(job: Mapping[str, Any]) -> str:
    try:
        return str(job["jobOutput"]["s3DataDestination"]["path"])
    except (KeyError, TypeError) as exc:
        raise _bad_answer("DescribeBatchInferenceJob", "jobOutput.s3DataDestination.path") from exc


def _job_with(job: Any, operation: str, *keys: str) -> dict[str, Any]:
    """`job`, when it is an object holding `keys`; else the answer is not Personalize's."""
    if not isinstance(job, dict) or any(not isinstance(job.get(k), str) for k in keys):
        raise _bad_answer(operation, ", ".join(keys))
    return job


def _bad_answer(operation: str, what: str) -> PersonalizeCallFailed:
    return PersonalizeCallFailed(
        operation,
        "BadResponse",
        f"Personalize {operation}: the answer lacks {what}; is AWS_ENDPOINT_URL an AWS "
        "Personalize endpoint? Re-run the edition when it answers properly",
        retriable=True,
    )


def _aws_errors() -> tuple[type[Exception], ...]:
    """What botocore raises for a failed call: an error answer, no answer, a garbled one."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return (ClientError, BotoCoreError, ResponseParserError)


def raise_aws_error(exc: BaseException, operation: str, *, job: str | None = None) -> NoReturn:
    """Raise `PersonalizeCallFailed` for botocore's `exc`: the operation, the AWS error code,
    the HTTP status, AWS's message (shortened, credentials removed) and what to check."""
    from botocore.exceptions import ClientError

    subject = f"Personalize {operation}" + (f" (job {job})" if job else "")
    if isinstance(exc, ClientError):
        code = _code(exc) or "UnknownError"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = _clean(str(exc.response.get("Error", {}).get("Message") or ""))
        retriable, hint = _verdict(code, status)
        where = f" (HTTP {status})" if status else ""
        text = f"{subject} failed: {code}" + (f": {said}" if said else "") + f"{where}; {hint}"
    else:
        code, retriable = type(exc).__name__, True
        text = f"{subject} failed: {code}: {_clean(str(exc))}; {_HINT_CONNECT}"
    raise PersonalizeCallFailed(operation, code, text, retriable=retriable) from exc


def _verdict(code: str, status: object) -> tuple[bool, str]:
    if code in _ACCESS or status in (401, 403):
        return False, _HINT_ACCESS
    if code in _SETTINGS:
        return False, _HINT_SETTINGS
    return True, _HINT_RETRY


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _clean(text: str) -> str:
    """One line of at most `_MAX_MESSAGE` characters, without credentials a server echoed."""
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 8:
            text = text.replace(value, "***")
    text = _ACCESS_KEY_ID.sub("***", _SECRET_PARAM.sub(r"\1***", text))
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
