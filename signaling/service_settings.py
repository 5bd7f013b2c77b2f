"""The settings of the services the hub drives beside signalling: recording (``[recording]``),
webhooks to the meeting backend (``[webhooks]``) and the AI persona (``[agent]``), with their
checks. :mod:`signaling.settings` holds them in its one ``Settings`` tree (and re-exports
them); each ``*_problems`` function lists what is wrong, and ``Settings.validate`` raises
the first as a ``ConfigError``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .s3 import S3Config
from .webhooks import WebhookConfigError, check_secret, check_url


def is_loopback(host: str) -> bool:
    """True when listening on ``host`` reaches this machine only: ``localhost``, 127.x.y.z,
    ``::1``. Any other name or address (``0.0.0.0``, ``""``: every address) is the network."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class RecordingSettings:
    dir: str = "recordings"
    """Directory the recordings are kept in (one folder per meeting; relative paths are from
    the working directory). The hub's own server peer writes here and the hub serves
    downloads from here; standalone ``connvo-rtc tap`` workers need the same directory
    (``--recording-dir``). With ``storage = "s3"`` it is only the local spool (files being
    written or waiting for their upload): each machine has its own."""
    url_ttl_s: int = 3600
    """Seconds a download URL from ``recordings/getRecording`` stays valid."""
    stale_after_s: float = 60.0
    """After the meeting has ended, a file still being written that has not grown for this
    long (its recorder died and nobody finished it) makes the recording ``failed``."""
    video: bool = True
    """Record participants' video too (VP8 as sent, one WebM file per video track, and a
    composite grid video after the meeting) in meetings that allow participant video; off:
    audio only, and participants send the server peer no video."""
    storage: str = "directory"
    """Where recordings are kept: ``directory`` (``dir``) or ``s3`` (an S3-compatible bucket,
    the ``s3_*`` keys; ``dir`` is then the local spool files are written to and uploaded from:
    docs/recording.md)."""
    s3_bucket: str = ""
    """``storage = "s3"``: the bucket name."""
    s3_prefix: str = ""
    """``storage = "s3"``: key prefix of every object (e.g. ``recordings/``)."""
    s3_endpoint_url: str = ""
    """``storage = "s3"``: ``http(s)://host[:port]`` of the S3 API (MinIO, Ceph, R2, ...);
    empty: AWS S3 in ``s3_region``."""
    s3_region: str = "us-east-1"
    """``storage = "s3"``: the region requests are signed for (SigV4)."""
    s3_access_key: str = ""
    """``storage = "s3"``: access key id (env ``CONNVO_RTC_RECORDING_S3_ACCESS_KEY``)."""
    s3_secret_key: str = field(default="", repr=False)
    """``storage = "s3"``: secret access key (env ``CONNVO_RTC_RECORDING_S3_SECRET_KEY``;
    never logged)."""
    s3_path_style: bool = True
    """``storage = "s3"``: path-style URLs (``endpoint/bucket/key``: MinIO and most
    self-hosted servers); false: virtual-hosted (``bucket.endpoint/key``)."""
    s3_part_mb: int = 8
    """``storage = "s3"``: files larger than this many MiB are uploaded in parts of this size
    (multipart upload; 5..512)."""
    mix_concurrency: int = 1
    """Mixes one hub worker runs at once (each a niced child process using about one core)."""
    mix_cpu_s: int = 600
    """CPU seconds one mix may use (``RLIMIT_CPU`` of its child process) before it fails."""
    mix_reclaim_after_s: float = 10.0
    """A mix whose worker stopped renewing its claim this long (it died) is redone by another
    hub worker."""


@dataclass(frozen=True)
class AgentSettings:
    """The AI persona of meetings created from a scenario (docs/agent.md)."""

    scenarios_dir: str = ""
    """Directory of the deployment's scenario files (``*.yaml``, docs/agent.md). Empty: the
    example scenarios shipped with connvo-rtc."""
    brain: str = "script"
    """What thinks: ``script`` (the scenario's scripted conversation, offline and
    deterministic) or ``openai`` (an OpenAI-compatible chat-completions API, streaming)."""
    llm_base_url: str = ""
    """``brain = "openai"``: the API's base URL, e.g. ``https://api.openai.com/v1``."""
    llm_model: str = ""
    """``brain = "openai"``: the model name."""
    llm_api_key: str = field(default="", repr=False)
    """``brain = "openai"``: the API key (env ``CONNVO_RTC_AGENT_LLM_API_KEY``)."""
    voice: str = "espeak"
    """What speaks: ``espeak`` (espeak-ng on this machine) or ``azure`` (Azure text to
    speech, streaming; the seed's default provider)."""
    azure_endpoint: str = ""
    """``voice = "azure"``: the text-to-speech endpoint, e.g.
    ``https://westeurope.tts.speech.microsoft.com``."""
    azure_key: str = field(default="", repr=False)
    """``voice = "azure"``: the resource key (env ``CONNVO_RTC_AGENT_AZURE_KEY``)."""
    espeak_rate: int = 150
    """``voice = "espeak"``: speaking rate, words per minute (80..450)."""


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    """Endpoints of the meeting backend that receive every event (Standard Webhooks: a signed
    JSON ``POST``). ``https://`` URLs; ``http://`` only to a loopback host unless
    ``allow_plain_http``. Env ``CONNVO_RTC_WEBHOOKS_URLS`` (comma-separated). Empty: no
    webhooks."""
    secret: tuple[str, ...] = field(default=(), repr=False)
    """Signing secrets in Standard Webhooks form (``whsec_`` + base64 of 24..64 random bytes).
    Every delivery is signed with each (rotation: list the new one first, drop the old one
    once receivers have it). Env ``CONNVO_RTC_WEBHOOKS_SECRET`` (comma-separated). Required
    with ``urls``."""
    timeout_s: float = 15.0
    """Seconds one delivery attempt may take (connect, send, response) before it counts as
    failed. Must be below ``lease_s``."""
    backoff_initial_s: float = 5.0
    """Seconds before the first retry of a failed delivery; each further retry waits twice as
    long (with jitter: a random 50..100 % of it), up to ``backoff_max_s``."""
    backoff_max_s: float = 3600.0
    """Longest wait between two attempts, seconds (a ``Retry-After`` of the receiver is
    honoured up to this)."""
    max_age_s: float = 86_400.0
    """An event still undelivered this many seconds after it was queued is given up at its
    next failed attempt (counted and logged as an error); the next event of its meeting
    follows. With the defaults that is some 30 to 60 attempts over 24 hours."""
    max_queued: int = 100_000
    """Undelivered events (per endpoint) the store holds at most; an event emitted while it is
    full is not queued (counted and logged as an error)."""
    lease_s: float = 30.0
    """A worker delivering a meeting's events holds its lease this long per attempt; when the
    worker dies mid-delivery another worker takes the meeting once the lease runs out."""
    concurrency: int = 4
    """Meetings one worker delivers to at once."""
    poll_interval_s: float = 1.0
    """Seconds between looks for due events from other workers (events emitted by this
    worker are picked up at once)."""
    allow_plain_http: bool = False
    """Allow ``http://`` URLs to hosts other than loopback (the body and signature then cross
    the network unencrypted)."""


def recording_problems(r: RecordingSettings) -> list[str]:
    """What is wrong with the ``[recording]`` settings (empty: nothing)."""
    checks: list[tuple[bool, str]] = [
            (bool(r.dir.strip()), "recording.dir must not be empty"),
            (60 <= r.url_ttl_s <= 7 * 86_400,
             "recording.url_ttl_s must be 60..604800"),
            (r.stale_after_s > 0, "recording.stale_after_s must be > 0"),
            (r.storage in ("directory", "s3"),
             'recording.storage must be "directory" or "s3"'),
            (r.storage != "s3" or bool(r.s3_bucket.strip()),
             'recording.storage = "s3" needs recording.s3_bucket'),
            (r.storage != "s3" or (bool(r.s3_access_key) and bool(
                r.s3_secret_key)), ('recording.storage = "s3" needs '
             "recording.s3_access_key and recording.s3_secret_key (env "
             "CONNVO_RTC_RECORDING_S3_SECRET_KEY)")),
            (not r.s3_endpoint_url or r.s3_endpoint_url.startswith(
                ("http://", "https://")), "recording.s3_endpoint_url must be http(s)://..."),
            (5 <= r.s3_part_mb <= 512, "recording.s3_part_mb must be 5..512"),
            (1 <= r.mix_concurrency <= 16,
             "recording.mix_concurrency must be 1..16"),
            (10 <= r.mix_cpu_s <= 86_400, "recording.mix_cpu_s must be 10..86400"),
            (2 <= r.mix_reclaim_after_s <= 300,
             "recording.mix_reclaim_after_s must be 2..300"),
    ]
    return [message for ok, message in checks if not ok]


def s3_config(r: RecordingSettings) -> S3Config | None:
    """The bucket recordings go to (``recording.storage = "s3"``), else None."""
    if r.storage != "s3":
        return None
    return S3Config(bucket=r.s3_bucket.strip(), endpoint_url=r.s3_endpoint_url,
                    region=r.s3_region, access_key=r.s3_access_key,
                    secret_key=r.s3_secret_key, path_style=r.s3_path_style,
                    prefix=r.s3_prefix, part_bytes=r.s3_part_mb << 20)


def agent_problems(a: AgentSettings) -> list[str]:
    """What is wrong with the ``[agent]`` settings (empty: nothing)."""

    def remote_ok(url: str) -> bool:  # a key goes with it: https, or plain to loopback
        parts = urlsplit(url)
        return bool(parts.hostname) and (parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback(parts.hostname or "")))

    checks: list[tuple[bool, str]] = [
        (a.brain in ("script", "openai"), f"agent.brain {a.brain!r} must be script or openai"),
        (a.voice in ("espeak", "azure"), f"agent.voice {a.voice!r} must be espeak or azure"),
        (not a.scenarios_dir or Path(a.scenarios_dir).is_dir(),
         f"agent.scenarios_dir {a.scenarios_dir!r} is not a directory"),
        (80 <= a.espeak_rate <= 450, "agent.espeak_rate must be 80..450 words per minute"),
    ]
    if a.brain == "openai":
        checks += [
            (remote_ok(a.llm_base_url), ("agent.brain = openai needs agent.llm_base_url, "
             "an https:// URL (http:// only to a loopback host), e.g. "
             "https://api.openai.com/v1")),
            (bool(a.llm_model.strip()), "agent.brain = openai needs agent.llm_model"),
            (bool(a.llm_api_key), ("agent.brain = openai needs agent.llm_api_key (env "
             "CONNVO_RTC_AGENT_LLM_API_KEY)")),
        ]
    if a.voice == "azure":
        checks += [
            (remote_ok(a.azure_endpoint), ("agent.voice = azure needs agent.azure_endpoint, "
             "an https:// URL (http:// only to a loopback host), e.g. "
             "https://westeurope.tts.speech.microsoft.com")),
            (bool(a.azure_key), ("agent.voice = azure needs agent.azure_key (env "
             "CONNVO_RTC_AGENT_AZURE_KEY)")),
        ]
    return [message for ok, message in checks if not ok]


def webhook_problems(w: WebhookSettings) -> list[str]:
    """What is wrong with the ``[webhooks]`` settings (empty: nothing)."""
    checks: list[tuple[bool, str]] = [
        (0 < w.timeout_s <= 300, "webhooks.timeout_s must be > 0 and <= 300"),
        (w.lease_s > w.timeout_s, ("webhooks.lease_s must be above webhooks.timeout_s (a "
         "delivery must end before its lease does)")),
        (w.lease_s <= 3600, "webhooks.lease_s must be <= 3600"),
        (0 < w.backoff_initial_s <= w.backoff_max_s,
         "webhooks.backoff_initial_s must be > 0 and <= webhooks.backoff_max_s"),
        (w.backoff_max_s <= 86_400, "webhooks.backoff_max_s must be <= 86400"),
        (w.max_age_s >= w.backoff_initial_s, ("webhooks.max_age_s must be >= "
         "webhooks.backoff_initial_s")),
        (w.max_age_s <= 30 * 86_400, "webhooks.max_age_s must be <= 2592000 (30 days)"),
        (1 <= w.max_queued <= 10_000_000, "webhooks.max_queued must be 1..10000000"),
        (1 <= w.concurrency <= 256, "webhooks.concurrency must be 1..256"),
        (0 < w.poll_interval_s <= 60, "webhooks.poll_interval_s must be > 0 and <= 60"),
        (not w.urls or bool(w.secret), ("webhooks.urls needs webhooks.secret (whsec_...; "
         "env CONNVO_RTC_WEBHOOKS_SECRET)")),
        (len(set(w.urls)) == len(w.urls), "webhooks.urls lists a URL twice"),
    ]
    problems = [message for ok, message in checks if not ok]
    try:
        for url in w.urls:
            check_url(url, allow_plain_http=w.allow_plain_http)
        for secret in w.secret:
            check_secret(secret)
    except WebhookConfigError as exc:
        problems.append(str(exc))
    return problems
