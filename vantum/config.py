"""Server configuration: one frozen value, read from the environment and CLI flags.

Provider keys decide the engines: each stage independently uses its cloud
provider when a key is set and the embedded offline engine otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import ConfigError
from .logs import LOG_FORMATS, LogFormat


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def _env_fail_mode(env: Mapping[str, str]) -> bool:
    raw = env.get("VANTUM_REDIS_FAIL", "open").strip().lower() or "open"
    if raw not in ("open", "closed"):
        raise ConfigError(f"VANTUM_REDIS_FAIL={raw!r}: use open or closed")
    return raw == "open"


def _default(name: str) -> Any:
    return getattr(attrs.fields(Config), name).default


@attrs.frozen
class Config:
    host: str = "127.0.0.1"
    port: int = 8000

    deepgram_api_key: str | None = None
    deepgram_url: str = "wss://api.deepgram.com/v1/listen"
    deepgram_model: str = "nova-3"

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"

    engine: str = "cascade"
    """``cascade`` (STT -> LLM -> TTS) or ``s2s`` (OpenAI Realtime; docs/s2s.md)."""
    openai_realtime_model: str = "gpt-realtime"
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"

    cartesia_api_key: str | None = None
    cartesia_url: str = "wss://api.cartesia.ai/tts/websocket"
    cartesia_voice_id: str = "a0e99841-438c-4a64-b679-ae501e7d6091"
    cartesia_sample_rate: int = 24_000
    """Used only for callers whose own rate Cartesia cannot produce; others get theirs."""

    public_url: str | None = None
    """Base URL callers and Twilio reach this server at (e.g. https://voice.example.com);
    used for the TwiML stream URL and webhook signature checks."""
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    """When set, /twilio/* requests must carry a valid X-Twilio-Signature."""
    twilio_api_base: str = "https://api.twilio.com"
    telnyx_api_key: str | None = None
    """Telnyx API v2 key: the webhook answers calls through Call Control with it."""
    telnyx_public_key: str | None = None
    """The account's base64 Ed25519 public key; when set, ``/telnyx/webhook`` requests
    must carry a valid ``telnyx-signature-ed25519`` (docs/telephony.md)."""
    telnyx_api_base: str = "https://api.telnyx.com"
    outbound_rate_per_s: float = 1.0
    """Outbound calls placed per second, after a burst (0 disables the limit)."""
    outbound_burst: int = 5
    max_outbound_calls: int = 10
    """Outbound calls in progress at once (placed, no final status yet)."""

    records_url: str | None = None
    """Where call records go: ``sqlite:///vantum-calls.db`` (the ``vantum serve`` default),
    ``postgresql://...``; None/empty disables recording."""
    webhook_urls: tuple[str, ...] = ()
    """Where call events are POSTed (``VANTUM_WEBHOOK_URL``, several separated by commas
    or spaces); needs ``records_url`` (the outbox lives in the call store) and
    ``webhook_secret``. docs/integration.md."""
    webhook_secret: str | None = None
    """HMAC-SHA256 key of the ``Vantum-Signature`` header (``VANTUM_WEBHOOK_SECRET``)."""
    recordings_dir: str | None = None
    """Where call recordings go (``VANTUM_RECORDINGS_DIR``); None: nothing is recorded."""
    record_calls: bool = False
    """Record every call (``VANTUM_RECORD_CALLS=1``); otherwise only calls whose agent
    asks (``record_audio``). Needs ``recordings_dir``."""
    recordings_s3_url: str | None = None
    """``s3://bucket/prefix/``: recordings are also uploaded there after each call
    (``VANTUM_RECORDINGS_S3_URL``; credentials from the usual AWS variables)."""
    s3_endpoint_url: str | None = None
    """An S3-compatible store's URL (``VANTUM_S3_ENDPOINT_URL``); None: AWS."""
    recordings_keep_local: bool = True
    """Keep the local file after an upload (``VANTUM_RECORDINGS_KEEP_LOCAL=0``: delete)."""
    recording_max_mb: int = 512
    recording_max_s: float = 4 * 3600.0
    api_keys: tuple[str, ...] = ()
    """``VANTUM_API_KEYS``: comma-separated ``key`` or ``key:read`` (read-only) entries
    for the ``/v1`` calls API; none: the API is off."""
    audio_rate_margin: float | None = 1.25
    """Clients may send audio at most this much faster than real time (after a 5 s lead);
    None disables the check (the test stack does, to stream fixtures fast)."""

    auth_secret: str | None = None
    """HMAC secret for ``/ws`` tokens (``VANTUM_AUTH_SECRET``, at least 32 bytes). When
    unset, ``vantum serve`` keeps one in ``auth_secret_file`` (docs/hardening.md)."""
    auth_secret_file: str = "~/.config/vantum/auth-secret"
    tool_secret: str | None = None
    """HMAC secret signing HTTP tool requests (``VANTUM_TOOL_SECRET``); unset: the auth
    secret signs them (docs/agents-tools.md)."""
    insecure_no_auth: bool = False
    """The explicit dev flag: ``/ws`` accepts connections without a token."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed on ``/ws``; empty means the server's own origin only."""
    connect_rate_per_s: float = 2.0
    """New ``/ws`` connections per client IP per second, after a burst; 0 disables."""
    connect_burst: int = 20
    twilio_connect_rate_per_s: float = 10.0
    """New ``/twilio/stream`` connections per client IP per second, after a burst; 0
    disables. Its own bucket: Twilio's few media-server addresses carry every call, so
    this is sized for the whole call volume through one address, not for one caller."""
    twilio_connect_burst: int = 100
    token_max_ttl_s: int = 4 * 3600
    """Longest lifetime (``exp - iat``) a ``/ws`` token may have; longer ones are refused
    (``too_long_lived``) and ``vantum token`` will not mint them."""

    local_stt: str = "auto"
    """Offline STT when no Deepgram key: ``auto`` (Whisper if installed, else
    PocketSphinx), ``whisper`` or ``pocketsphinx`` (``VANTUM_LOCAL_STT``)."""
    whisper_model: str = "tiny.en"
    """The model of the offline Whisper STT (``VANTUM_WHISPER_MODEL``): ``tiny.en``,
    ``base`` (the ``whisper-base`` extra; 2x the CPU) or a CTranslate2 model directory.
    Asking for one that is not installed stops the server at start-up."""
    llm_threads: int = 0
    """Threads llama.cpp decodes the offline LLM with (``VANTUM_LLM_THREADS``); 0: two,
    or one on a single-core machine. Measured on 2 cores, one conversation: 2 threads
    generate 24 tokens/s, 1 thread 12.6 (voice to voice ~0.6 s instead of ~1.2 s); on a
    machine busy with other work 1 thread degrades more gracefully (docs/embedded.md)."""
    local_tts: str = "auto"
    """Offline TTS when no Cartesia key: ``auto`` (hibari if installed, else eSpeak NG),
    ``hibari`` or ``espeak`` (``VANTUM_LOCAL_TTS``)."""
    system_prompt: str | None = None
    """The default agent's instructions when no agents file is given (taken literally)."""
    agents_file: str | None = None
    """TOML agent definitions (``--agents`` / ``VANTUM_AGENTS``; docs/agents.md)."""
    default_agent: str | None = None
    """The agent a call runs when it names none (``--default-agent``); default: the
    file's ``default`` key, else its first agent."""
    agent_resolver_url: str | None = None
    """Webhook asked for each call's agent (``VANTUM_AGENT_RESOLVER_URL``)."""
    agent_resolver_secret: str | None = None
    """HMAC key signing the resolver's requests (``VANTUM_AGENT_RESOLVER_SECRET``)."""
    agent_resolver_timeout_s: float = 1.5
    """The call waits this long for the resolver, then runs the default agent."""
    max_call_s: float = 3600.0
    """Calls end (``connection.lifecycle.max_duration``, close 1000) at this length."""
    max_frame_bytes: int = 1 << 20
    """Larger WebSocket messages close the connection with code 1009."""
    max_sessions: int = 1_000
    playback_lead_ms: int = 200
    """How far ahead of real time answer audio is sent; also bounds barge-in latency."""
    output_chunk_ms: int = 40
    """Audio per ``audio.output.chunk`` (the first chunk of an answer may be shorter).
    Larger chunks mean fewer messages per call, hence less CPU; the lead, not the chunk,
    bounds how much audio a barge-in has to cut."""
    request_queue: int = 10
    voicechat_idle_prompts: bool = False
    """Whether calls on ``/voicechat/ws`` get idle prompts and the idle hang-up
    (``VANTUM_VOICECHAT_IDLE_PROMPTS=1``); off by default: the original Vantum never
    speaks unasked, and its frontend shows a bare "Disconnected" after a hang-up."""
    graceful_timeout: float = 10.0
    """Seconds sessions get to finish on SIGINT/SIGTERM before they are closed (1001)."""
    write_timeout_ms: int = 2000
    """A write that waits this long for room in the socket cuts the peer (it stopped
    reading); also how long a peer has to answer a close frame. docs/hardening.md."""
    workers: int = 0
    """Worker processes of ``vantum serve`` (``VANTUM_WORKERS``, ``--workers``); 0 chooses:
    one per usable core when every stage is on a cloud provider, else 1
    (``server/workers.py``, docs/deploy.md)."""
    worker_metrics_port: int | None = None
    """First per-worker ``/metrics`` + ``/health`` port with several workers (worker i
    uses it + i); unset: ``port`` + 1; 0: any free port (logged)."""
    redis_url: str | None = None
    """Shared state of a cluster (``VANTUM_REDIS_URL``): the session cap, connect rate
    limits, the call registry, hang-ups across workers. None: this process's memory."""
    redis_fail_open: bool = True
    """While Redis is unreachable, admit new calls on this worker's own limits (True,
    ``VANTUM_REDIS_FAIL=open``) or refuse them (``closed``). Calls in progress go on."""
    redis_call_ttl_s: float = 15.0
    """A call's entry in Redis lives this long unless its worker's heartbeat (every
    third of it) renews it: how long a dead worker's calls still count."""
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    """``text`` for people, ``json`` (one object per line) for log collectors."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        e = os.environ if env is None else env
        values: dict[str, object] = {
            "host": e.get("VANTUM_HOST", _default("host")),
            "port": _env_int(e, "VANTUM_PORT", _default("port")),
            "deepgram_api_key": e.get("DEEPGRAM_API_KEY") or None,
            "deepgram_url": e.get("DEEPGRAM_URL", _default("deepgram_url")),
            "deepgram_model": e.get("DEEPGRAM_MODEL", _default("deepgram_model")),
            "openai_api_key": e.get("OPENAI_API_KEY") or None,
            "openai_base_url": e.get("OPENAI_BASE_URL") or None,
            "openai_model": e.get("OPENAI_MODEL", _default("openai_model")),
            "engine": e.get("VANTUM_ENGINE", _default("engine")),
            "openai_realtime_model": e.get(
                "OPENAI_REALTIME_MODEL", _default("openai_realtime_model")
            ),
            "openai_realtime_url": e.get("OPENAI_REALTIME_URL", _default("openai_realtime_url")),
            "cartesia_api_key": e.get("CARTESIA_API_KEY") or None,
            "cartesia_url": e.get("CARTESIA_URL", _default("cartesia_url")),
            "cartesia_voice_id": e.get("CARTESIA_VOICE_ID", _default("cartesia_voice_id")),
            "public_url": e.get("VANTUM_PUBLIC_URL") or None,
            "twilio_account_sid": e.get("TWILIO_ACCOUNT_SID") or None,
            "twilio_auth_token": e.get("TWILIO_AUTH_TOKEN") or None,
            "twilio_api_base": e.get("TWILIO_API_BASE", _default("twilio_api_base")),
            "telnyx_api_key": e.get("TELNYX_API_KEY") or None,
            "telnyx_public_key": e.get("TELNYX_PUBLIC_KEY") or None,
            "telnyx_api_base": e.get("TELNYX_API_BASE", _default("telnyx_api_base")),
            "outbound_rate_per_s": _env_float(
                e, "VANTUM_OUTBOUND_RATE", _default("outbound_rate_per_s")
            ),
            "outbound_burst": _env_int(e, "VANTUM_OUTBOUND_BURST", _default("outbound_burst")),
            "max_outbound_calls": _env_int(
                e, "VANTUM_MAX_OUTBOUND_CALLS", _default("max_outbound_calls")
            ),
            "records_url": e.get("VANTUM_RECORDS_URL", "sqlite:///vantum-calls.db") or None,
            "webhook_urls": tuple(
                u for u in e.get("VANTUM_WEBHOOK_URL", "").replace(",", " ").split() if u
            ),
            "webhook_secret": e.get("VANTUM_WEBHOOK_SECRET") or None,
            "recordings_dir": e.get("VANTUM_RECORDINGS_DIR") or None,
            "record_calls": _env_bool(e, "VANTUM_RECORD_CALLS"),
            "recordings_s3_url": e.get("VANTUM_RECORDINGS_S3_URL") or None,
            "s3_endpoint_url": e.get("VANTUM_S3_ENDPOINT_URL") or None,
            "recordings_keep_local": e.get("VANTUM_RECORDINGS_KEEP_LOCAL", "1").strip()
            not in ("0", "false", "no"),
            "recording_max_mb": _env_int(
                e, "VANTUM_RECORDING_MAX_MB", _default("recording_max_mb")
            ),
            "recording_max_s": _env_float(e, "VANTUM_RECORDING_MAX_S", _default("recording_max_s")),
            "api_keys": tuple(
                k.strip() for k in e.get("VANTUM_API_KEYS", "").split(",") if k.strip()
            ),
            "audio_rate_margin": _env_float(
                e, "VANTUM_AUDIO_RATE_MARGIN", _default("audio_rate_margin")
            ),
            "auth_secret": e.get("VANTUM_AUTH_SECRET") or None,
            "auth_secret_file": e.get("VANTUM_AUTH_SECRET_FILE") or _default("auth_secret_file"),
            "tool_secret": e.get("VANTUM_TOOL_SECRET") or None,
            "insecure_no_auth": _env_bool(e, "VANTUM_INSECURE_NO_AUTH"),
            "allowed_origins": tuple(
                o.strip() for o in e.get("VANTUM_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            "connect_rate_per_s": _env_float(
                e, "VANTUM_CONNECT_RATE", _default("connect_rate_per_s")
            ),
            "connect_burst": _env_int(e, "VANTUM_CONNECT_BURST", _default("connect_burst")),
            "twilio_connect_rate_per_s": _env_float(
                e, "VANTUM_TWILIO_CONNECT_RATE", _default("twilio_connect_rate_per_s")
            ),
            "twilio_connect_burst": _env_int(
                e, "VANTUM_TWILIO_CONNECT_BURST", _default("twilio_connect_burst")
            ),
            "token_max_ttl_s": _env_int(e, "VANTUM_TOKEN_MAX_TTL_S", _default("token_max_ttl_s")),
            "local_stt": e.get("VANTUM_LOCAL_STT") or _default("local_stt"),
            "local_tts": e.get("VANTUM_LOCAL_TTS") or _default("local_tts"),
            "whisper_model": e.get("VANTUM_WHISPER_MODEL", "").strip() or _default("whisper_model"),
            "llm_threads": _env_int(e, "VANTUM_LLM_THREADS", _default("llm_threads")),
            "system_prompt": e.get("VANTUM_SYSTEM_PROMPT") or None,
            "agents_file": e.get("VANTUM_AGENTS") or None,
            "default_agent": e.get("VANTUM_DEFAULT_AGENT") or None,
            "agent_resolver_url": e.get("VANTUM_AGENT_RESOLVER_URL") or None,
            "agent_resolver_secret": e.get("VANTUM_AGENT_RESOLVER_SECRET") or None,
            "agent_resolver_timeout_s": _env_float(
                e, "VANTUM_AGENT_RESOLVER_TIMEOUT_S", _default("agent_resolver_timeout_s")
            ),
            "max_call_s": _env_float(e, "VANTUM_MAX_CALL_S", _default("max_call_s")),
            "max_frame_bytes": _env_int(e, "VANTUM_MAX_FRAME_BYTES", _default("max_frame_bytes")),
            "max_sessions": _env_int(e, "VANTUM_MAX_SESSIONS", _default("max_sessions")),
            "playback_lead_ms": _env_int(
                e, "VANTUM_PLAYBACK_LEAD_MS", _default("playback_lead_ms")
            ),
            "output_chunk_ms": _env_int(e, "VANTUM_OUTPUT_CHUNK_MS", _default("output_chunk_ms")),
            "voicechat_idle_prompts": _env_bool(e, "VANTUM_VOICECHAT_IDLE_PROMPTS"),
            "graceful_timeout": _env_float(
                e, "VANTUM_GRACEFUL_TIMEOUT", _default("graceful_timeout")
            ),
            "write_timeout_ms": _env_int(
                e, "VANTUM_WRITE_TIMEOUT_MS", _default("write_timeout_ms")
            ),
            "workers": _env_int(e, "VANTUM_WORKERS", _default("workers")),
            "worker_metrics_port": _env_int(e, "VANTUM_WORKER_METRICS_PORT", -1),
            "redis_url": e.get("VANTUM_REDIS_URL") or None,
            "redis_fail_open": _env_fail_mode(e),
            "redis_call_ttl_s": _env_float(
                e, "VANTUM_REDIS_CALL_TTL_S", _default("redis_call_ttl_s")
            ),
            "log_level": e.get("VANTUM_LOG_LEVEL", _default("log_level")),
            "log_format": e.get("VANTUM_LOG_FORMAT") or _default("log_format"),
        }
        if values["worker_metrics_port"] == -1:
            values["worker_metrics_port"] = None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["log_format"] not in LOG_FORMATS:
            raise ConfigError(f"VANTUM_LOG_FORMAT={values['log_format']!r}: use text or json")
        try:
            config = cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        if config.token_max_ttl_s <= 0:
            raise ConfigError(f"VANTUM_TOKEN_MAX_TTL_S={config.token_max_ttl_s}: use 1 or more")
        if not 10 <= config.output_chunk_ms <= 1000:
            raise ConfigError(f"VANTUM_OUTPUT_CHUNK_MS={config.output_chunk_ms}: use 10..1000")
        if config.agent_resolver_url and not config.agent_resolver_secret:
            raise ConfigError(
                "VANTUM_AGENT_RESOLVER_URL needs VANTUM_AGENT_RESOLVER_SECRET (the HMAC key "
                "its requests are signed with; at least 32 bytes)"
            )
        if config.agent_resolver_secret and len(config.agent_resolver_secret.encode()) < 32:
            raise ConfigError("VANTUM_AGENT_RESOLVER_SECRET must be at least 32 bytes")
        if not 0 < config.agent_resolver_timeout_s <= 30:
            raise ConfigError(
                f"VANTUM_AGENT_RESOLVER_TIMEOUT_S={config.agent_resolver_timeout_s}: use 0..30 s"
            )
        if config.record_calls and not config.recordings_dir:
            raise ConfigError("VANTUM_RECORD_CALLS=1 needs VANTUM_RECORDINGS_DIR")
        if config.recordings_s3_url and not config.recordings_dir:
            raise ConfigError("VANTUM_RECORDINGS_S3_URL needs VANTUM_RECORDINGS_DIR")
        for url in config.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"VANTUM_WEBHOOK_URL: {url!r} is not an http(s) URL")
        if config.webhook_urls and not config.webhook_secret:
            raise ConfigError("VANTUM_WEBHOOK_URL is set without VANTUM_WEBHOOK_SECRET")
        if config.webhook_secret is not None and len(config.webhook_secret) < 16:
            raise ConfigError("VANTUM_WEBHOOK_SECRET: use at least 16 characters")
        if not 0 <= config.llm_threads <= 64:
            raise ConfigError(f"VANTUM_LLM_THREADS={config.llm_threads}: use 1..64 (0: automatic)")
        if config.workers < 0:
            raise ConfigError(f"VANTUM_WORKERS={config.workers}: use 1 or more (0: automatic)")
        if config.write_timeout_ms < 100:
            raise ConfigError(f"VANTUM_WRITE_TIMEOUT_MS={config.write_timeout_ms}: use 100 or more")
        return config
