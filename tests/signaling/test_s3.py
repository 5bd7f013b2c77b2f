"""The small S3 client (:mod:`signaling.s3`): its SigV4 signer against botocore's, and its
calls against a real local S3-compatible server that checks every signature (moto_server)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.s3 import S3Client, S3Error, sign
from tests.support.s3_server import S3Server, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.create_bucket("client-test")
        yield server


@pytest.mark.parametrize(("method", "url", "headers", "body"), [
    ("GET", "https://s3.eu-west-1.amazonaws.com/b/m%20eet/a.ogg", {}, b""),
    ("PUT", "http://127.0.0.1:9000/b/x/y.ogg", {"Content-Type": "audio/ogg",
                                                 "x-amz-meta-who": "  al  ice "}, b"data"),
    ("GET", "http://127.0.0.1:9000/b?list-type=2&prefix=meeting_1%2Ftracks%2F", {}, b""),
    ("POST", "http://127.0.0.1:9000/b/k?uploads=", {}, b""),
    ("GET", "http://127.0.0.1:9000/b/k", {"Range": "bytes=0-9"}, b""),
])
def test_the_signature_is_botocores(method: str, url: str, headers: dict[str, str],
                                    body: bytes) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    now = dt.datetime(2026, 12, 6, 5, 30, 1, tzinfo=dt.UTC)
    sha = hashlib.sha256(body).hexdigest()
    ours = sign(method, url, headers, payload_sha256=sha, access_key="AKIDEXAMPLE",
                secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region="eu-west-1",
                now=now)
    request = AWSRequest(method=method, url=url, data=body,
                         headers={k: v for k, v in ours.items() if k != "authorization"})
    request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                       "s3", "eu-west-1")
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    assert ours["authorization"].endswith(f"Signature={expected}")


async def test_objects_round_trip_with_ranges_listing_and_multipart(s3: S3Server,
                                                                    tmp_path: Path) -> None:
    client = S3Client(s3.config("client-test", part_bytes=5 << 20))
    try:
        await client.put_bytes("m/a b.json", b'{"x": 1}', content_type="application/json")
        assert await client.get_bytes("m/a b.json") == b'{"x": 1}'
        assert await client.get_bytes("m/none") is None
        big = tmp_path / "big.ogg"
        data = os.urandom((5 << 20) * 2 + 12345)  # three parts
        big.write_bytes(data)
        assert await client.put_file("m/big.ogg", big, content_type="audio/ogg") == len(data)
        assert await client.head("m/big.ogg") == len(data)
        got = b"".join([c async for c in client.stream("m/big.ogg", 5 << 20, (5 << 20) + 99)])
        assert got == data[5 << 20:(5 << 20) + 100]
        copy = tmp_path / "copy.ogg"
        assert await client.download("m/big.ogg", copy)
        assert copy.read_bytes() == data
        listed = {o.key: o.size for o in await client.list("m/")}
        assert listed == {"m/a b.json": 8, "m/big.ogg": len(data)}
        await client.delete("m/big.ogg")
        await client.delete("m/big.ogg")  # twice: nothing
        assert await client.head("m/big.ogg") is None
    finally:
        await client.aclose()
        await client.aclose()


async def test_a_wrong_secret_is_refused_by_the_server(s3: S3Server) -> None:
    """The local server checks signatures: the tests above passing means ours are right."""
    config = s3.config("client-test")
    client = S3Client(type(config)(**{**config.__dict__, "secret_key": "not-the-secret"}))
    try:
        with pytest.raises(S3Error) as failed:
            await client.put_bytes("m/x", b"x")
        assert failed.value.status == 403 and failed.value.code == "SignatureDoesNotMatch"
        assert not failed.value.retryable
    finally:
        await client.aclose()
