"""Support code for tests and benchmarks: a real local S3-compatible server, ``moto_server``
(moto[server], the test extra), on a free loopback port, as a child process stopped by PID.

Its SigV4 checking is on: an IAM user with an ``s3:*`` policy and an access key are created
first (unauthenticated, with boto3), then ``/moto-api/reset-auth 0`` makes every later request
prove its signature (moto recomputes it with botocore): a request our signer got wrong is a
``SignatureDoesNotMatch`` 403, not a silent pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from signaling.s3 import S3Config
from signaling.testing.ports import free_port

REGION = "eu-west-1"


@dataclass
class S3Server:
    """A running moto_server: its URL and the credentials of the user it checks."""

    url: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen[bytes]

    def config(self, bucket: str, *, prefix: str = "", part_bytes: int = 8 << 20) -> S3Config:
        return S3Config(bucket=bucket, endpoint_url=self.url, region=REGION,
                        access_key=self.access_key, secret_key=self.secret_key,
                        path_style=True, prefix=prefix, part_bytes=part_bytes)

    def create_bucket(self, bucket: str) -> None:
        client = _boto(self.url, self.access_key, self.secret_key)
        client.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})


def _boto(url: str, access_key: str, secret_key: str, service: str = "s3") -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name=REGION,
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"moto_server did not listen on {port}")


def available() -> bool:
    """Whether moto_server (and boto3, to set it up) can be started here."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("boto3", "moto", "flask"))


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto_server with SigV4 checking on; stop it (by PID) on exit."""
    if not available():
        raise RuntimeError("moto[server] is not installed (the test extra: pip install -e "
                           "'.[test]')")
    port = free_port()
    env = dict(os.environ, AWS_DEFAULT_REGION=REGION, MOTO_ALLOW_NONEXISTENT_REGION="true")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}"
        # Before auth is on: any key works for the IAM calls that make the real user.
        iam = _boto(url, "setup", "setup", "iam")
        iam.create_user(UserName="recorder")
        iam.put_user_policy(
            UserName="recorder", PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="recorder")["AccessKey"]
        request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0",
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        yield S3Server(url=url, access_key=key["AccessKeyId"],
                       secret_key=key["SecretAccessKey"], proc=proc)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
