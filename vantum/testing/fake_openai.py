"""A local OpenAI-compatible chat completions server for tests, with fault injection.

Real HTTP on a real socket (Hypercorn, trio worker) and the real wire format:
``POST /v1/chat/completions`` with ``Authorization: Bearer <key>``, answered as
server-sent ``chat.completion.chunk`` events (a role delta, ~4-character content
deltas at a configurable pace, a ``finish_reason`` chunk, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), or as one
``chat.completion`` when ``stream`` is false. Errors use OpenAI's JSON shape, so
the official SDK raises the same exception classes it would against the service.

Usage::

    async with serve_fake_openai(FakeOpenAIConfig(first_token_latency=0.01)) as fake:
        llm = OpenAILLM(fake.api_key, base_url=fake.base_url)
        fake.fail_next(429, retry_after=0.1)   # next request is rate limited
        fake.stall_next(5.0)                   # the one after stalls mid-stream
        ...
        await fake.wait_until(lambda: fake.disconnects == 1)
        assert fake.requests[-1]["messages"][-1]["content"] == "hello"

More faults, for fault matrices (each applies to the next streamed answer):

- ``fake.slow_start_next(seconds)``: the response headers go out only after
  ``seconds`` (a client whose read timeout is shorter gives up and may retry).
- ``fake.refuse_for(seconds, status=429, retry_after=1.0)``: a 429 storm — every
  request in the next ``seconds`` gets OpenAI's rate-limit error with a
  ``retry-after`` header; ``await fake.wait_refusals_over()``.
- ``fake.reset_next()``: the stream is cut halfway: the connection closes in the
  middle of the chunked body, without its terminating chunk or ``[DONE]``.
- ``fake.malform_next(kind="json" | "shape")``: halfway through, one event is
  ``data:`` that is not JSON, or a chunk whose ``choices`` is not a list.

``fake.injected`` counts the faults actually served, by name.

Tool calls: with ``FakeOpenAIConfig(script=...)`` (``vantum fakes --llm-script``,
:mod:`vantum.testing.llm_script`) a matching user message is answered with
streamed ``tool_calls`` as the service streams them — the first delta of each call
carries ``index``, ``id``, ``type`` and the function's name with empty arguments,
then the arguments follow in ~4-character pieces under the same ``index``, and the
last chunk says ``finish_reason: "tool_calls"`` — and the request that brings the
results back is answered with the step's ``then``. Like the service, the fake only
calls tools the request offered, and refuses (400) a ``tool`` message that does not
answer a preceding assistant ``tool_calls``.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..asgi import read_body, serve_app, serve_lifespan
from .change import ChangeSignal
from .faults import RefusalWindow
from .llm_script import ScriptStep, match_step

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Responder = Callable[[list[dict[str, Any]]], str]

log = logging.getLogger("vantum.testing.fake_openai")


class _InjectedReset(Exception):
    """Raised mid-body so Hypercorn closes the connection, as a crashed upstream would."""


def _not_injected(record: logging.LogRecord) -> bool:
    """Hypercorn logs the app exception behind an injected reset; that one is expected."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_InjectedReset) is None
    return not isinstance(exc, _InjectedReset)


log.addFilter(_not_injected)

_MALFORMED = {
    "json": b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","choi\n\n',
    "shape": b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","choices":"oops"}\n\n',
}

_ERRORS: dict[int, tuple[str, str, str | None]] = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", "model_not_found"),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def echo_responder(messages: list[dict[str, Any]]) -> str:
    """Default reply: echoes the last user message in three ``||BREAK||``-separated parts."""
    said = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            said = _text_of(message.get("content")).strip().rstrip(".!?")
            break
    return f"You said: {said}. ||BREAK|| That is interesting. ||BREAK|| Tell me more."


@attrs.frozen
class FakeOpenAIConfig:
    """Latency defaults are those of a small hosted model, so timing bugs show up in tests."""

    api_key: str = "sk-fake-0123456789"
    first_token_latency: float = 0.3
    tokens_per_second: float = 50.0
    chars_per_token: int = 4
    responder: Responder = echo_responder
    script: tuple[ScriptStep, ...] = ()
    """Tool calls to make on cue (see :mod:`vantum.testing.llm_script`)."""


@attrs.define(eq=False)
class FakeOpenAI:
    """A running fake: where it listens, what it received, and the faults to inject."""

    config: FakeOpenAIConfig
    base_url: str = ""
    requests: list[dict[str, Any]] = attrs.Factory(list)
    """JSON bodies of authenticated, well-formed chat completion requests, in arrival order."""
    statuses: list[int] = attrs.Factory(list)
    """HTTP status of every chat completion response, in order."""
    completed: int = 0
    """Streams that reached ``data: [DONE]``."""
    disconnects: int = 0
    """Streams the client closed before the end."""
    injected: collections.Counter[str] = attrs.Factory(collections.Counter)
    """Faults actually served: ``slow_start``, ``refused``, ``stall``, ``reset``, ``malformed``."""
    _failures: deque[tuple[int, float | None]] = attrs.Factory(deque)
    _stalls: deque[float] = attrs.Factory(deque)
    _slow_starts: deque[float] = attrs.Factory(deque)
    _refuse: RefusalWindow = attrs.Factory(RefusalWindow)
    _resets: int = 0
    _malformed: deque[str] = attrs.Factory(deque)
    _changed: ChangeSignal = attrs.Factory(ChangeSignal)

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (401, 403, 429, 500, 503...)."""
        self._failures.extend([(status, retry_after)] * count)

    def stall_next(self, seconds: float) -> None:
        """Make the next successful stream go silent for ``seconds`` halfway through."""
        self._stalls.append(seconds)

    def slow_start_next(self, seconds: float) -> None:
        """Hold the next stream's response headers back for ``seconds``."""
        self._slow_starts.append(seconds)

    def refuse_for(
        self, seconds: float, status: int = 429, retry_after: float | None = 1.0
    ) -> None:
        """Answer every request of the next ``seconds`` with HTTP ``status``."""
        self._refuse.open(seconds, status, retry_after)

    async def wait_refusals_over(self) -> None:
        """Return once a ``refuse_for`` window has passed."""
        await self._refuse.wait_over()

    def reset_next(self) -> None:
        """Cut the next stream's connection halfway through its body."""
        self._resets += 1

    def malform_next(self, kind: str = "json") -> None:
        """Put one malformed event halfway into the next stream."""
        if kind not in _MALFORMED:
            raise ValueError(f"kind must be one of {sorted(_MALFORMED)}")
        self._malformed.append(kind)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Block until ``predicate()`` holds; re-checked whenever a request changes state."""
        await self._changed.wait_until(predicate)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application."""
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.rstrip("/") == "/v1/models" and method == "GET":
            await self._models(scope, send)
        elif path.rstrip("/") != "/v1/chat/completions":
            await _send_json(
                send, 404, _error(f"Invalid URL ({method} {path})", "invalid_request_error")
            )
        elif method != "POST":
            await _send_json(send, 405, _error("Method not allowed", "invalid_request_error"))
        else:
            await self._chat(scope, receive, send)

    async def _models(self, scope: Scope, send: Send) -> None:
        if not self._authorized(scope):
            await _send_json(send, 401, _error(*_ERRORS[401]))
            return
        model = {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "vantum-fake"}
        await _send_json(send, 200, {"object": "list", "data": [model]})

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        return bool(headers.get(b"authorization", b"") == f"Bearer {self.config.api_key}".encode())

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = (await read_body(receive)) or b""
        status, payload, extra = self._check(scope, body)
        if status != 200:
            self.statuses.append(status)
            self._changed.notify()
            await _send_json(send, status, payload, extra)
            return
        self.statuses.append(200)
        calls, reply = _scripted(self.config, payload)
        streaming = bool(payload.get("stream"))
        stall = self._stalls.popleft() if self._stalls and streaming else None
        slow = self._slow_starts.popleft() if self._slow_starts and streaming else 0.0
        fault: str | None = None
        if streaming and self._resets:
            self._resets -= 1
            fault = "reset"
        elif streaming and self._malformed:
            fault = self._malformed.popleft()
        if not streaming:
            await trio.sleep(self.config.first_token_latency)
            await _send_json(
                send, 200, _completion(payload, reply, self.config.chars_per_token, calls)
            )
            self._changed.notify()
            return
        finished = False
        try:
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if not finished:  # after [DONE] the server itself reports a disconnect
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                if slow:
                    self.injected["slow_start"] += 1
                    await trio.sleep(slow)
                await self._stream(payload, reply, stall, send, fault, calls)
                finished = True
                await send(_body(b"data: [DONE]\n\n", more=False))
                nursery.cancel_scope.cancel()
        finally:  # an injected reset counts as a disconnect too
            if finished:
                self.completed += 1
            else:
                self.disconnects += 1
            self._changed.notify()

    def _check(
        self, scope: Scope, body: bytes
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        """Decide the response status: auth, then validation, then injected faults."""
        if not self._authorized(scope):
            return 401, _error(*_ERRORS[401]), []
        try:
            payload = json.loads(body)
        except ValueError:
            return (
                400,
                _error(
                    "We could not parse the JSON body of your request.", "invalid_request_error"
                ),
                [],
            )
        problem = _validate(payload)
        if problem is not None:
            return 400, _error(problem, "invalid_request_error", "invalid_request"), []
        self.requests.append(payload)
        refused = self._refuse.status_now()
        if refused is not None:
            self.injected["refused"] += 1
            return _injected_error(refused, self._refuse.retry_after)
        if self._failures:
            return _injected_error(*self._failures.popleft())
        return 200, payload, []

    async def _stream(
        self,
        payload: dict[str, Any],
        reply: str,
        stall: float | None,
        send: Send,
        fault: str | None = None,
        calls: Sequence[dict[str, Any]] = (),
    ) -> None:
        config = self.config
        tokens = _tokens(reply, config.chars_per_token)
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        usage_wanted = bool((payload.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": payload["model"],
            "system_fingerprint": "fp_vantum_fake",
        }
        if usage_wanted:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse({**base, "choices": [choice]})

        # Paced by the clock, like a model generating at its own rate: token i is due
        # at first_token_latency + i / tokens_per_second after the request, so one
        # late wake-up of this process delays one token, not every token after it.
        interval = 1.0 / config.tokens_per_second
        due = trio.current_time() + config.first_token_latency
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await trio.sleep_until(due)
        await send(_body(chunk({"role": "assistant", "content": "", "refusal": None})))
        for i, token in enumerate(tokens):
            if i:
                due += interval
                await trio.sleep_until(due)
            if i == len(tokens) // 2:
                if stall is not None:
                    self.injected["stall"] += 1
                    await trio.sleep(stall)
                    due += stall
                if fault == "reset":
                    self.injected["reset"] += 1
                    raise _InjectedReset  # Hypercorn drops the connection mid-body
                if fault is not None:
                    self.injected["malformed"] += 1
                    await send(_body(_MALFORMED[fault]))
            await send(_body(chunk({"content": token})))
        for index, call in enumerate(calls):
            first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            await send(_body(chunk({"tool_calls": [{"index": index, **first}]})))
            for piece in _tokens(call["function"]["arguments"], config.chars_per_token):
                due += interval
                await trio.sleep_until(due)
                fragment = {"index": index, "function": {"arguments": piece}}
                await send(_body(chunk({"tool_calls": [fragment]})))
        if calls:
            finish = "tool_calls"
        await send(_body(chunk({}, finish)))
        if usage_wanted:
            usage = _usage(payload["messages"], len(tokens))
            await send(_body(_sse({**base, "choices": [], "usage": usage})))


@asynccontextmanager
async def serve_fake_openai(
    config: FakeOpenAIConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeOpenAI]:
    """Run a fake on ``host:port`` (0 picks a free port) for the duration of the block."""
    fake = FakeOpenAI(config or FakeOpenAIConfig())
    async with serve_app(fake.app, host, port, errorlog=log) as url:
        fake.base_url = url + "/v1"
        yield fake


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-request-id", b"req_fake"),
]


def _text_of(content: Any) -> str:
    """Message content is a string or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _validate(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "The request body must be a JSON object."
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "you must provide a model parameter"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Missing required parameter: 'messages'."
    roles = {"system", "developer", "user", "assistant", "tool"}
    open_calls: set[Any] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in roles:
            return f"Invalid value for 'messages[{i}].role'."
        if not isinstance(message.get("content"), str | list | None):
            return f"Invalid type for 'messages[{i}].content'."
        if message["role"] == "assistant":
            calls = message.get("tool_calls") or ()
            open_calls = {c.get("id") for c in calls if isinstance(c, dict)}
        elif message["role"] == "tool":
            if message.get("tool_call_id") not in open_calls:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
        else:
            open_calls = set()
    tools = payload.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not all(
            isinstance(t, dict)
            and t.get("type") == "function"
            and isinstance((t.get("function") or {}).get("name"), str)
            for t in tools
        )
    ):
        return "Invalid value for 'tools': each must be {type: 'function', function: {name,...}}."
    return None


def _scripted(
    config: FakeOpenAIConfig, payload: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """The tool calls and text to answer ``payload`` with (script first, then the responder)."""
    messages = payload["messages"]
    if config.script:
        user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        step = match_step(config.script, _text_of(user.get("content"))) if user else None
        if step is not None:
            if messages[-1].get("role") == "tool" or not step.tool_calls:
                return [], step.then or config.responder(messages)
            offered = {(t.get("function") or {}).get("name") for t in payload.get("tools") or ()}
            if all(c.name in offered for c in step.tool_calls):
                calls = [
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments))},
                    }
                    for c in step.tool_calls
                ]
                return calls, step.say
    return [], config.responder(messages)


def _tokens(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _usage(messages: list[dict[str, Any]], completion_tokens: int) -> dict[str, int]:
    prompt = sum(3 + len(_text_of(m.get("content"))) // 4 for m in messages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def _completion(
    payload: dict[str, Any], reply: str, chars_per_token: int, calls: Sequence[Any] = ()
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply or None, "refusal": None}
    if calls:
        message["tool_calls"] = list(calls)
    finish = "tool_calls" if calls else "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(payload["messages"], len(_tokens(reply, chars_per_token))),
    }


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _injected_error(
    status: int, retry_after: float | None
) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """An injected failure as OpenAI words it, with ``Retry-After`` when one is set."""
    message, kind, code = _ERRORS.get(status, ("Injected failure.", "server_error", None))
    headers = [] if retry_after is None else [(b"retry-after", f"{retry_after:g}".encode())]
    return status, _error(message, kind, code), headers


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _body(data: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send(_body(body, more=False))


__all__ = ["FakeOpenAI", "FakeOpenAIConfig", "echo_responder", "serve_fake_openai"]
