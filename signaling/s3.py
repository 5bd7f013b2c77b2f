"""A small S3 client on aiohttp: AWS Signature Version 4 and the handful of calls recording
storage needs (PutObject, multipart upload, GetObject with Range, HeadObject, DeleteObject,
ListObjectsV2).

Why not an SDK: aiobotocore brings botocore (tens of MB, its own event loop plumbing) for six
calls; this module signs requests itself (``sign``, checked against botocore's ``SigV4Auth`` in
``tests/signaling/test_s3.py``) and speaks the wire format of AWS S3 and of S3-compatible
servers (MinIO, Ceph RGW, Garage, Cloudflare R2, moto in the tests): path-style addressing
(``{endpoint}/{bucket}/{key}``) or virtual-hosted (``{bucket}.{host}/{key}``).

Every payload is hashed (``x-amz-content-sha256`` is the body's SHA-256, not
``UNSIGNED-PAYLOAD``), so a corrupted upload is refused by the server. Hashing and file reads
run in a thread: the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import io
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: S3 refuses parts under 5 MiB (except the last); 8 MiB is the SDKs' default.
MIN_PART_BYTES = 5 << 20


class S3Error(Exception):
    """An S3 call failed: ``status`` (0: no answer), S3's error ``code``, whether a retry may
    succeed (network errors, 5xx, 429, throttling)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"S3 {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 429 \
            or self.code in ("SlowDown", "RequestTimeout", "RequestTimeTooSkewed")


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the bucket (plain values: ``media/`` gets them too)."""

    bucket: str
    """Bucket name."""
    endpoint_url: str = ""
    """``http(s)://host[:port]`` of the S3 API; empty: AWS (``https://s3.<region>.amazonaws.com``)."""
    region: str = "us-east-1"
    """Region the requests are signed for (S3-compatible servers mostly accept any)."""
    access_key: str = ""
    """Access key id."""
    secret_key: str = field(default="", repr=False)
    """Secret access key (never logged)."""
    path_style: bool = True
    """``{endpoint}/{bucket}/{key}`` (MinIO, most self-hosted servers) rather than
    ``{bucket}.{endpoint host}/{key}`` (AWS's default)."""
    prefix: str = ""
    """Key prefix every object of this deployment goes under (e.g. ``recordings/``)."""
    part_bytes: int = 8 << 20
    """Files larger than this are uploaded in parts of this size (multipart upload)."""
    timeout_s: float = 60.0
    """Per request: connect and each read, seconds."""

    @property
    def endpoint(self) -> str:
        return (self.endpoint_url or f"https://s3.{self.region}.amazonaws.com").rstrip("/")


@dataclass(frozen=True)
class ListedObject:
    """One key of a listing, its size and last modification (unix seconds)."""

    key: str
    size: int
    modified: float


def _uri_encode(text: str, *, keep_slash: bool) -> str:
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(method: str, url: str, headers: Mapping[str, str], *, payload_sha256: str,
         access_key: str, secret_key: str, region: str, now: dt.datetime,
         service: str = "s3") -> dict[str, str]:
    """The headers to send with a SigV4-signed request: ``headers`` plus ``host``,
    ``x-amz-date``, ``x-amz-content-sha256`` and ``Authorization``. ``url`` carries the path
    (already percent-encoded once, as S3 wants) and the query. Every header given is signed."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    out["host"] = parts.netloc
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    query_pairs = []
    for item in parts.query.split("&") if parts.query else ():
        key, _, value = item.partition("=")
        query_pairs.append((_uri_encode(unquote(key), keep_slash=False),
                            _uri_encode(unquote(value), keep_slash=False)))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(query_pairs))
    names = sorted(out)
    canonical_headers = "".join(f"{n}:{out[n]}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join([method, parts.path or "/", canonical_query, canonical_headers,
                           signed, payload_sha256])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), date), region),
                              service), "aws4_request")
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={signed}, Signature={signature}")
    return out


def _read_chunk(path: Path, offset: int, size: int) -> tuple[bytes, str]:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(size)
    return data, hashlib.sha256(data).hexdigest()


class S3Client:
    """Calls on one bucket. Owns an aiohttp session (created on first use); :meth:`aclose`
    is idempotent."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise S3Error(0, "Closed", "the S3 client is closed")
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=self.config.timeout_s,
                                            sock_read=self.config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session

    def url(self, key: str = "", query: str = "") -> str:
        """The request URL of ``key`` (empty: the bucket) with an encoded ``query``."""
        c = self.config
        path = _uri_encode(key, keep_slash=True)
        if c.path_style:
            base = f"{c.endpoint}/{c.bucket}"
        else:
            scheme, _, host = c.endpoint.partition("://")
            base = f"{scheme}://{c.bucket}.{host}"
        return f"{base}/{path}" + (f"?{query}" if query else "")

    def _signed(self, method: str, url: str, headers: Mapping[str, str],
                payload_sha256: str) -> dict[str, str]:
        c = self.config
        return sign(method, url, headers, payload_sha256=payload_sha256,
                    access_key=c.access_key, secret_key=c.secret_key, region=c.region,
                    now=dt.datetime.now(dt.UTC))

    async def _call(self, method: str, key: str, *, query: str = "", body: bytes = b"",
                    body_sha256: str | None = None, headers: Mapping[str, str] | None = None,
                    ok: tuple[int, ...] = (200,)) -> tuple[int, Any, bytes]:
        """One request whose answer is read whole; S3Error unless its status is in ``ok``."""
        url = self.url(key, query)
        sha = body_sha256 or (hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256)
        signed = self._signed(method, url, headers or {}, sha)
        try:
            async with self._http().request(method, URL(url, encoded=True),
                                            data=io.BytesIO(body) if body else None, headers=signed,
                                            skip_auto_headers=("Content-Type",)) as resp:
                data = await resp.read()
                if resp.status not in ok:
                    raise _error(resp.status, data)
                return resp.status, resp.headers, data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise S3Error(0, type(exc).__name__, str(exc) or repr(exc)) from exc

    # ------------------------------------------------------------------ objects

    async def put_bytes(self, key: str, data: bytes, *, content_type: str = "") -> None:
        """PutObject of a small body."""
        headers = {"content-type": content_type} if content_type else {}
        await self._call("PUT", key, body=data, headers=headers)

    async def put_file(self, key: str, path: Path, *, content_type: str = "") -> int:
        """Upload ``path`` as ``key``: one PutObject, or a multipart upload when larger than
        ``part_bytes`` (aborted on failure: no parts left billed). Returns the bytes sent."""
        size = (await asyncio.to_thread(os.stat, path)).st_size
        part = max(self.config.part_bytes, MIN_PART_BYTES)
        headers = {"content-type": content_type} if content_type else {}
        if size <= part:
            data, sha = await asyncio.to_thread(_read_chunk, path, 0, size)
            await self._call("PUT", key, body=data, body_sha256=sha, headers=headers)
            return size
        _, _, answer = await self._call("POST", key, query="uploads=", headers=headers)
        upload_id = _text(ET.fromstring(answer), "UploadId")
        try:
            etags: list[str] = []
            for number, offset in enumerate(range(0, size, part), start=1):
                data, sha = await asyncio.to_thread(_read_chunk, path, offset, part)
                _, got, _ = await self._call(
                    "PUT", key, query=f"partNumber={number}&uploadId={quote(upload_id, safe='')}",
                    body=data, body_sha256=sha)
                etags.append(got.get("ETag", ""))
            done = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                           for n, e in enumerate(etags, start=1))
            body = f"<CompleteMultipartUpload>{done}</CompleteMultipartUpload>".encode()
            _, _, answer = await self._call(
                "POST", key, query=f"uploadId={quote(upload_id, safe='')}", body=body)
            if b"<Error>" in answer:  # S3 may fail a completion inside a 200
                raise _error(500, answer)
        except BaseException:
            try:
                await self._call("DELETE", key, query=f"uploadId={quote(upload_id, safe='')}",
                                 ok=(200, 204, 404))
            except S3Error as exc:
                logger.warning("s3 abort of upload %s of %s failed: %s", upload_id, key, exc)
            raise
        return size

    async def get_bytes(self, key: str) -> bytes | None:
        """A small object's body, or None if it does not exist."""
        status, _, data = await self._call("GET", key, ok=(200, 404))
        return data if status == 200 else None

    async def head(self, key: str) -> int | None:
        """An object's size, or None if it does not exist."""
        status, headers, _ = await self._call("HEAD", key, ok=(200, 404))
        return int(headers.get("Content-Length", "0")) if status == 200 else None

    async def delete(self, key: str) -> None:
        """DeleteObject (nothing if it does not exist)."""
        await self._call("DELETE", key, ok=(200, 204, 404))

    async def download(self, key: str, dest: Path) -> bool:
        """GetObject into ``dest`` (streamed; False if the object does not exist)."""
        url = self.url(key)
        signed = self._signed("GET", url, {}, EMPTY_SHA256)
        try:
            async with self._http().get(URL(url, encoded=True), headers=signed) as resp:
                if resp.status == 404:
                    return False
                if resp.status != 200:
                    raise _error(resp.status, await resp.read())
                with dest.open("wb") as f:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        await asyncio.to_thread(f.write, chunk)
                return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise S3Error(0, type(exc).__name__, str(exc) or repr(exc)) from exc

    async def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """GetObject with ``Range: bytes=start-end`` (inclusive), chunk by chunk."""
        url = self.url(key)
        signed = self._signed("GET", url, {"range": f"bytes={start}-{end}"}, EMPTY_SHA256)
        try:
            async with self._http().get(URL(url, encoded=True), headers=signed) as resp:
                if resp.status not in (200, 206):
                    raise _error(resp.status, await resp.read())
                async for chunk in resp.content.iter_chunked(1 << 16):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise S3Error(0, type(exc).__name__, str(exc) or repr(exc)) from exc

    async def list(self, prefix: str) -> list[ListedObject]:
        """Every key under ``prefix`` (ListObjectsV2, all pages)."""
        found: list[ListedObject] = []
        token = ""
        while True:
            query = f"list-type=2&prefix={quote(prefix, safe='')}"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            _, _, answer = await self._call("GET", "", query=query)
            root = ET.fromstring(answer)
            for item in root.iter(f"{_NS}Contents"):
                modified = dt.datetime.fromisoformat(
                    _text(item, "LastModified"))
                found.append(ListedObject(key=_text(item, "Key"),
                                          size=int(_text(item, "Size") or 0),
                                          modified=modified.timestamp()))
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return found


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(f"{_NS}{tag}")
    if child is None:
        child = node.find(tag)  # some servers answer without the namespace
    return (child.text or "") if child is not None else ""


def _error(status: int, body: bytes) -> S3Error:
    code, message = f"HTTP{status}", body[:200].decode(errors="replace")
    try:
        root = ET.fromstring(body)
        code = _text(root, "Code") or code
        message = _text(root, "Message") or message
    except ET.ParseError:
        pass
    return S3Error(status, code, message)
