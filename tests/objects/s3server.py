"""A local S3 server for the tests: moto in server mode, a subprocess on a free loopback port.

The object store under test talks to it with the real boto3 client over HTTP (SigV4, presigned
URLs and all), exactly as it talks to S3.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3

from mqchat.config import ObjectsSettings
from tests.conftest import free_port, wait_for_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-for-the-s3-standin"


class S3Server:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with log.open("wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=fh, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, "moto server", within=30.0)
        self._buckets = 0

    def settings(self, bucket: str) -> ObjectsSettings:
        return ObjectsSettings(backend="s3", s3_bucket=bucket, s3_endpoint_url=self.endpoint,
                               s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY,
                               s3_path_style=True)

    def env(self, bucket: str) -> dict[str, str]:
        """``MQCHAT_OBJECTS__*`` for a process that should use this server."""
        return {"MQCHAT_OBJECTS__BACKEND": "s3", "MQCHAT_OBJECTS__S3_BUCKET": bucket,
                "MQCHAT_OBJECTS__S3_ENDPOINT_URL": self.endpoint, "MQCHAT_OBJECTS__S3_ACCESS_KEY_ID": ACCESS_KEY,
                "MQCHAT_OBJECTS__S3_SECRET_ACCESS_KEY": SECRET_KEY, "MQCHAT_OBJECTS__S3_PATH_STYLE": "true"}

    def new_bucket(self) -> str:
        """A fresh bucket (one per test: tests never see each other's objects)."""
        self._buckets += 1
        name = f"test-bucket-{self._buckets}"
        client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        client.create_bucket(Bucket=name)
        client.close()
        return name

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
