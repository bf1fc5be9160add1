"""A real S3 HTTP endpoint on 127.0.0.1 for tests: moto's server mode, used through boto3.

Import the fixture into a conftest with ``from tests.s3server import s3_server  # noqa: F401``.
For the session it sets ``AWS_ENDPOINT_URL``, dummy credentials and a region in ``os.environ``
(so code under test that calls ``boto3.client("s3")`` reaches the server, and never any real
credentials or config files), creates the bucket `BUCKET`, and yields the endpoint URL.
The previous environment is restored afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

BUCKET = "calm-mail-test"

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint (``http://127.0.0.1:<port>``) of a moto S3 server with bucket `BUCKET`."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**_ENV, "AWS_ENDPOINT_URL": endpoint}
    saved = {key: os.environ.get(key) for key in (*env, *_UNSET)}
    try:
        for key in _UNSET:
            os.environ.pop(key, None)
        os.environ.update(env)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
