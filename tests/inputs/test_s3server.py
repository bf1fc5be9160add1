"""The S3 server fixture: a real HTTP endpoint reached through boto3's own configuration."""

from __future__ import annotations

import os

import boto3

from tests.s3server import BUCKET


def test_endpoint_is_local_and_boto3_uses_it(s3_server: str) -> None:
    assert s3_server.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key="hello.txt", Body=b"hi")
    assert client.get_object(Bucket=BUCKET, Key="hello.txt")["Body"].read() == b"hi"
    assert BUCKET in [b["Name"] for b in client.list_buckets()["Buckets"]]
