"""The replay benchmark behind ``benchmarks/replay.py`` and ``vantum bench``.

It lives in ``benchmarks/`` beside its fixtures, peer and results rather than in
the ``vantum`` package: it is a development tool (psutil, matplotlib, the Pipecat
peer), not something a deployed server needs. ``vantum bench`` imports it from the
source checkout (vantum/cli.py).

Why it is built this way:

* **Measured at the client, over real sockets.** Each simulated caller is a
  :class:`~vantum.testing.browser_client.BrowserClient` replaying speech WAVs at
  real-time pace; latency is what a caller would hear, not what the server logs.
* **One process per role.** The server under test runs alone (pinned to one core
  when the machine has two), so ``psutil`` reads *its* CPU and memory. The fake
  providers run in a second process and the load generator in this one.
* **Provider latency is modelled, then subtracted.** The fakes answer after the
  delays real services take (STT final, LLM first token and token rate, TTS first
  audio); whatever the caller waits beyond that floor is the server's own cost.
* **Same load, any server.** Anything that speaks docs/protocol.md can be put
  under the same replay: the Pipecat peer in ``benchmarks/peers/`` does, through
  a small serializer.

Definitions (also in docs/benchmarks.md): voice-to-voice = client sent
``audio.input.end`` -> first answer audio chunk arrived. Provider floor = STT
final latency + time until the LLM has streamed the first sentence + TTS first
audio latency. Added = voice-to-voice - floor. Late jitter = how much later a
chunk arrived than the previous chunk's audio duration. Underrun = a simulated
real-time player (starts on the first chunk) runs dry before the answer ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pyspy
import trio
from knee import KneeSearch

from vantum.audio.wav import read_wav
from vantum.protocol import events as ev

SCRIPT = (
    "hello i would like to book a table for two people tonight",
    "what time does the pharmacy on main street close today",
    "can you tell me the weather forecast for tomorrow morning",
)
FIXTURE_TEXTS = (
    "Hello, I would like to book a table for two people tonight.",
    "What time does the pharmacy on Main Street close today?",
    "Can you tell me the weather forecast for tomorrow morning?",
)
REPLY = "Sure, here is the answer you asked for. Anything else?"
"""Every answer. Its first sentence (39 chars, ends mid-token) is what both servers
must receive before they can start speech synthesis, so the floor is the same."""

CHARS_PER_TOKEN = 4


@attrs.frozen
class Workload:
    stt_final: float = 0.15
    llm_first_token: float = 0.3
    tokens_per_second: float = 50.0
    tts_first_chunk: float = 0.09
    turns: int = 3
    chunk_ms: int = 20
    think: float = 0.3
    """Pause between the end of the answer's playback and the next utterance."""
    ramp: float = 4.0
    """Session starts are spread over this many seconds, like calls arriving."""
    jitter_buffer_ms: float = 0.0
    """Client playout delay; 0 = play on arrival, as a simple browser client does."""

    def llm_first_sentence(self) -> float:
        """Seconds from request to the token that completes the reply's first sentence."""
        end = REPLY.index(". ") + 1  # the space after the period decides the cut
        return self.llm_first_token + (end // CHARS_PER_TOKEN) / self.tokens_per_second

    def floor(self) -> float:
        return self.stt_final + self.llm_first_sentence() + self.tts_first_chunk


# --------------------------------------------------------------------------- fakes


def bench_reply(messages: list[dict[str, Any]]) -> str:
    return REPLY


async def serve_fakes(workload: Workload) -> None:
    """Run the three fakes; print the server environment as one JSON line."""
    from vantum.testing.fake_cartesia import FakeCartesiaConfig, serve_fake_cartesia
    from vantum.testing.fake_deepgram import FakeDeepgramConfig, serve_fake_deepgram
    from vantum.testing.fake_openai import FakeOpenAIConfig, serve_fake_openai

    dg_cfg = FakeDeepgramConfig(script=SCRIPT, final_latency=workload.stt_final)
    oa_cfg = FakeOpenAIConfig(
        first_token_latency=workload.llm_first_token,
        tokens_per_second=workload.tokens_per_second,
        chars_per_token=CHARS_PER_TOKEN,
        responder=bench_reply,
    )
    ca_cfg = FakeCartesiaConfig(first_chunk_latency=workload.tts_first_chunk)
    async with (
        serve_fake_deepgram(dg_cfg) as dg,
        serve_fake_openai(oa_cfg) as oa,
        serve_fake_cartesia(ca_cfg) as ca,
    ):
        env = {
            "DEEPGRAM_API_KEY": dg.api_key,
            "DEEPGRAM_URL": dg.url,
            "OPENAI_API_KEY": oa.api_key,
            "OPENAI_BASE_URL": oa.base_url,
            "CARTESIA_API_KEY": ca.api_key,
            "CARTESIA_URL": ca.url,
        }
        print(json.dumps(env), flush=True)
        await trio.sleep_forever()


async def calibrate_fakes(
    env: dict[str, str], pcm: bytes, wl: Workload, rounds: int = 5
) -> dict[str, Any]:
    """Each fake's latency as a minimal raw client sees it, on the idle machine.

    The difference to the modelled latency is the fakes' own cost (Python, HTTP,
    JSON, loopback): part of "added latency" that a real provider would replace
    with its own network time. Reported so the two can be told apart.
    """
    import httpx
    from trio_websocket import open_websocket_url

    from vantum.providers import cartesia_messages as cm
    from vantum.providers import deepgram_messages as dm

    stt: list[float] = []
    llm: list[float] = []
    tts: list[float] = []
    url = dm.listen_url(env["DEEPGRAM_URL"], dm.ListenOptions())
    async with open_websocket_url(
        url, extra_headers=dm.auth_headers(env["DEEPGRAM_API_KEY"])
    ) as ws:
        for _ in range(rounds):
            for i in range(0, len(pcm), 640):
                await ws.send_message(pcm[i : i + 640])
            with trio.move_on_after(0.5):  # let the fake work through the burst first
                while True:
                    await ws.get_message()
            t0 = trio.current_time()
            await ws.send_message(dm.FINALIZE)
            while not json.loads(await ws.get_message()).get("from_finalize"):
                pass
            stt.append(trio.current_time() - t0)
    headers = {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        for _ in range(rounds):
            t0, text = trio.current_time(), ""
            endpoint = env["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
            async with http.stream("POST", endpoint, json=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    for choice in json.loads(line[6:]).get("choices", []):
                        text += choice.get("delta", {}).get("content") or ""
                    if ". " in text:
                        llm.append(trio.current_time() - t0)
                        break
    sentence = REPLY[: REPLY.index(". ") + 1]
    url = cm.build_url(env["CARTESIA_URL"], env["CARTESIA_API_KEY"], cm.DEFAULT_VERSION)
    async with open_websocket_url(url) as ws:
        for i in range(rounds):
            request = cm.GenerationRequest(f"cal-{i}", sentence, "sonic-2", "bench-voice")
            t0, first = trio.current_time(), None
            await ws.send_message(cm.encode_request(request))
            while True:
                reply = cm.parse_response(await ws.get_message())
                if isinstance(reply, cm.AudioChunk) and first is None:
                    first = trio.current_time() - t0
                elif isinstance(reply, cm.Done | cm.ErrorResponse):
                    break
            if first is not None:
                tts.append(first)
    measured = {
        "stt_final_ms": 1000 * float(np.median(stt)),
        "llm_first_sentence_ms": 1000 * float(np.median(llm)),
        "tts_first_chunk_ms": 1000 * float(np.median(tts)) if tts else math.nan,
    }
    modelled = {
        "stt_final_ms": 1000 * wl.stt_final,
        "llm_first_sentence_ms": 1000 * wl.llm_first_sentence(),
        "tts_first_chunk_ms": 1000 * wl.tts_first_chunk,
    }
    return {
        "measured_ms": {k: round(v, 1) for k, v in measured.items()},
        "fake_overhead_ms": round(sum(measured.values()) - sum(modelled.values()), 1),
    }


# ----------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_NICE = 0
_PROFILE_DIR: Path | None = None
_FAKE_ENV: dict[str, str] = {}
"""The fakes' environment once they run: what :func:`probe_fake_llm` talks to."""
"""``--profile``: where each step's py-spy recording goes (None: not profiled)."""


def _raise_priority(own_session: bool = True) -> None:
    """Apply ``--nice`` to this process and, when it leads its own session, to its
    autogroup (a plain nice value only weighs against the same autogroup's processes)."""
    if _NICE:
        os.setpriority(os.PRIO_PROCESS, 0, _NICE)
        if own_session:
            with contextlib.suppress(OSError):
                Path("/proc/self/autogroup").write_text(str(_NICE))


def _die_with_parent() -> None:
    """In a child: get SIGTERM if the benchmark dies, so no server outlives it (Linux)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _runq_wait(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(task.read_text().split()[1])
    return total / 1e9


class Proc:
    """A child process we started: pinned, measurable, and stopped by its own PID."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], cores: set[int] | None, log: Path
    ) -> None:
        import psutil

        def pin() -> None:
            # Own session = own scheduler autogroup: with autogroups on (the Linux
            # default), each role then gets its own CPU share instead of splitting one.
            os.setsid()
            _die_with_parent()
            _raise_priority()
            if cores:
                os.sched_setaffinity(0, cores)

        self.name = name
        self.log = log
        with open(log, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=pin,
            )
        self.ps = psutil.Process(self.popen.pid)

    def read_line(self, timeout: float) -> str:
        import selectors

        assert self.popen.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.popen.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"{self.name} printed nothing in {timeout} s: see {self.log}")
        return self.popen.stdout.readline().decode()

    def wait_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}): see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout} s")

    def _tree(self) -> list[Any]:
        """The process and its live children (``vantum serve --workers N``'s workers)."""
        import psutil

        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.ps]

    def cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(Exception):  # a child that just exited
                t = p.cpu_times()
                total += float(t.user + t.system)
        return total

    def runq_wait(self) -> float:
        return sum(_runq_wait(p.pid) for p in self._tree())

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            with contextlib.suppress(Exception):
                total += int(p.memory_info().rss)
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


# -------------------------------------------------------------------------- client


@attrs.define
class Turn:
    end_at: float = math.nan
    first_audio: float | None = None
    chunks: list[tuple[float, float]] = attrs.Factory(list)  # (arrival, seconds)
    complete: bool = False
    metrics: dict[str, Any] = attrs.Factory(dict)
    errors: list[str] = attrs.Factory(list)
    sent_messages: int = 0
    """Messages the caller sent in this turn (audio frames and control events)."""

    def playout(self, buffer_s: float) -> tuple[int, float, float]:
        """(underruns, underrun seconds, playback end) of a real-time player."""
        underruns, dry, play_end = 0, 0.0, math.nan
        for i, (at, dur) in enumerate(self.chunks):
            if i == 0:
                play_end = at + buffer_s
            elif at > play_end + 1e-3:
                underruns += 1
                dry += at - play_end
            play_end = max(play_end, at) + dur
        return underruns, dry, play_end

    def late(self) -> list[float]:
        c = self.chunks
        return [max(0.0, c[i][0] - c[i - 1][0] - c[i - 1][1]) for i in range(1, len(c))]


@attrs.define
class Session:
    started: float = math.nan
    ended: float = math.nan
    turns: list[Turn] = attrs.Factory(list)
    error: str | None = None


async def _collect(client: Any, turn: Turn, expect_metrics: bool, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while True:
            event = await client.next_event()
            kind, p = event["eventType"], event.get("payload") or {}
            if kind == ev.OUTPUT_CHUNK:
                at = event["_receivedAt"]
                if turn.first_audio is None:
                    turn.first_audio = at
                turn.chunks.append((at, len(p["audio"]) / 2 / p["sampleRate"]))
            elif kind == ev.OUTPUT_COMPLETE:
                turn.complete = True
                if not expect_metrics:
                    return
            elif kind == ev.METRICS_TURN:
                turn.metrics = p
                return
            elif ".error." in kind or kind.startswith("error."):
                turn.errors.append(kind)


async def replay_session(
    url: str,
    index: int,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
    session: Session,
    start_at: float,
    expect_metrics: bool,
) -> None:
    """One caller: connect, then speak-and-listen ``wl.turns`` times."""
    from trio_websocket import ConnectionClosed, HandshakeError

    from vantum.testing.browser_client import BrowserClient

    await trio.sleep_until(start_at)
    session.started = trio.current_time()
    try:
        async with BrowserClient.connect(url) as client:
            for t in range(wl.turns):
                pcm, rate = clips[(index + t) % len(clips)]
                client.events.clear()
                turn = Turn()
                session.turns.append(turn)
                await client.send(ev.INPUT_START, {"samplingRate": rate})
                speech = len(pcm) / 2 / rate
                turn.sent_messages = 2 + math.ceil(1000 * speech / wl.chunk_ms)  # start, end
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_collect, client, turn, expect_metrics, speech + 20.0)
                    await client.stream_audio(pcm, rate, chunk_ms=wl.chunk_ms)
                    turn.end_at = await client.end_turn()
                _, _, play_end = turn.playout(wl.jitter_buffer_ms / 1000)
                if not math.isnan(play_end):
                    await trio.sleep_until(play_end + wl.think)
    except (OSError, ConnectionClosed, HandshakeError, trio.BrokenResourceError) as exc:
        session.error = f"{type(exc).__name__}: {exc}"
    except trio.EndOfChannel:
        session.error = "server closed the connection"
    session.ended = trio.current_time()


def _grew(buffer: bytearray, size: int) -> bool:
    return len(buffer) != size


def trailing_silence(pcm: bytes, rate: int, level: int = 64) -> float:
    """Seconds of near-zero samples at the end of a clip (the pause after speech)."""
    samples = np.abs(np.frombuffer(pcm, dtype="<i2"))
    loud = np.nonzero(samples > level)[0]
    return (len(samples) - 1 - int(loud[-1])) / rate if len(loud) else 0.0


async def replay_twilio_session(
    url: str,
    index: int,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
    session: Session,
    start_at: float,
    expect_metrics: bool,
) -> None:
    """One phone caller (fake Twilio media stream): the server ends turns by its VAD."""
    import httpx
    from trio_websocket import ConnectionClosed, HandshakeError

    from vantum.protocol.twilio import SAMPLE_RATE
    from vantum.testing.fake_twilio import place_call

    await trio.sleep_until(start_at)
    session.started = trio.current_time()
    server = url.replace("ws://", "http://").removesuffix("/ws")
    try:
        # Through the voice webhook, as Twilio does: the stream needs its one-time ticket.
        async with place_call(server) as call, trio.open_nursery() as nursery:
            arrivals: list[tuple[float, float]] = []

            async def watch() -> None:
                seen = len(call.received)
                while True:
                    await call.wait_until(partial(_grew, call.received, seen))
                    now, size = trio.current_time(), len(call.received)
                    arrivals.append((now, (size - seen) / 2 / SAMPLE_RATE))
                    seen = size

            nursery.start_soon(watch)
            for t in range(wl.turns):
                pcm, rate = clips[(index + t) % len(clips)]
                turn = Turn()
                session.turns.append(turn)
                mark = len(arrivals)
                # The fake's mic sends the clip from its next 20 ms tick on, in real time;
                # say() itself may return late (it wakes on the next message it gets).
                speech = len(pcm) / 2 / rate - trailing_silence(pcm, rate)
                turn.end_at = trio.current_time() + speech
                await call.say(pcm, rate)
                # The answer is over once no audio came for a while and all of it played.
                with trio.move_on_after(20.0):
                    while True:
                        count = len(arrivals)
                        await trio.sleep(0.6)
                        if count > mark and len(arrivals) == count and call.heard == call.received:
                            break
                turn.chunks = [a for a in arrivals[mark:] if a[0] > turn.end_at]
                turn.first_audio = turn.chunks[0][0] if turn.chunks else None
                turn.complete = bool(turn.chunks)
                await trio.sleep(wl.think)
            nursery.cancel_scope.cancel()
    except (
        OSError,
        ConnectionClosed,
        HandshakeError,
        trio.BrokenResourceError,
        httpx.HTTPError,
        RuntimeError,  # the webhook answered no <Stream> (e.g. at capacity)
    ) as exc:
        session.error = f"{type(exc).__name__}: {exc}"
    session.ended = trio.current_time()


# --------------------------------------------------------------------------- stats


def _pct(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [50, 95, 99])
    return {
        "p50": round(float(q[0]), 1),
        "p95": round(float(q[1]), 1),
        "p99": round(float(q[2]), 1),
        "max": round(float(a.max()), 1),
    }


_STAGES = (
    "endOfSpeechToFinalMs",
    "finalToLlmFirstTokenMs",
    "llmFirstTokenToTtsFirstAudioMs",
    "ttsFirstAudioToFirstAudioSentMs",
    "voiceToVoiceMs",
)


def summarize(sessions: Sequence[Session], wl: Workload, floor: float) -> dict[str, Any]:
    turns = [t for s in sessions for t in s.turns]
    answered = [t for t in turns if t.first_audio is not None and t.complete]
    v2v = [1000 * (t.first_audio - t.end_at) for t in answered if t.first_audio is not None]
    floor_ms = 1000 * floor
    late = [1000 * x for t in answered for x in t.late()]
    under = [t.playout(wl.jitter_buffer_ms / 1000) for t in answered]
    stages: dict[str, float | None] = {}
    for key in _STAGES:
        vals = [float(t.metrics[key]) for t in answered if t.metrics.get(key) is not None]
        stages[key] = round(float(np.mean(vals)), 1) if vals else None
    minutes = sum(
        (s.ended - s.started) / 60 for s in sessions if not math.isnan(s.ended - s.started)
    )
    tail = tail_attribution(answered)
    return {
        "turns": len(turns),
        "turns_answered": len(answered),
        "sessions_failed": sum(1 for s in sessions if s.error),
        "errors": sorted(
            {e for t in turns for e in t.errors} | {s.error for s in sessions if s.error}
        ),
        "v2v_ms": _pct(v2v),
        "added_ms": _pct([x - floor_ms for x in v2v]),
        "late_jitter_ms": _pct(late),
        "chunks": len(late) + len(answered),
        "underrun_turns": sum(1 for u in under if u[0]),
        "underruns": sum(u[0] for u in under),
        "underrun_ms": round(1000 * sum(u[1] for u in under), 1),
        "server_stages_ms": stages,
        "tail_attribution_ms": tail,
        "call_minutes": round(minutes, 3),
        "client_messages_per_session_s": (
            round(
                (sum(t.sent_messages for t in turns) + len(late) + len(answered)) / minutes / 60, 1
            )
            if minutes and any(t.sent_messages for t in turns)
            else None
        ),
        "floor_ms": round(floor_ms, 1),
    }


def tail_attribution(answered: Sequence[Turn]) -> dict[str, dict[str, float]] | None:
    """Where the slowest turns lose their time: each server stage, and what the server
    does not see (client v2v less the server's voiceToVoiceMs: the caller's last
    frames in flight, the first answer chunk on its way back, both ends' loops),
    averaged over the slowest 5 % of turns (by client v2v, at least one) and over the
    rest. The difference between the two rows says which stage makes the p99
    (issue 21: "something produces 50 ms outliers at low load")."""
    rows = [
        (1000 * (t.first_audio - t.end_at), t.metrics)
        for t in answered
        if t.first_audio is not None and t.metrics.get("voiceToVoiceMs") is not None
    ]
    if len(rows) < 2:
        return None
    rows.sort(key=lambda r: r[0])
    cut = max(1, math.ceil(0.05 * len(rows)))

    def mean_of(part: Sequence[tuple[float, dict[str, Any]]]) -> dict[str, float]:
        out = {"clientV2vMs": float(np.mean([v for v, _ in part]))}
        for key in _STAGES:
            vals = [float(m[key]) for _, m in part if m.get(key) is not None]
            if vals:
                out[key] = float(np.mean(vals))
        out["outsideServerMs"] = float(np.mean([v - float(m["voiceToVoiceMs"]) for v, m in part]))
        return {k: round(v, 1) for k, v in out.items()}

    return {"slowest_5pct": mean_of(rows[-cut:]), "rest": mean_of(rows[:-cut])}


# ---------------------------------------------------------------------------- runs


@attrs.define
class Target:
    """A server under test: how to start it and what it tells the client."""

    name: str
    argv: list[str]
    expect_metrics: bool
    env: dict[str, str] = attrs.Factory(dict)
    protocol: str = "browser"
    """``browser`` (docs/protocol.md, manual turns) or ``twilio`` (media stream, VAD turns)."""
    extra_floor: float = 0.0
    """Policy delay on the critical path that is not the server's cost (VAD silence)."""


def start_target(
    target: Target, fake_env: dict[str, str], cores: set[int] | None, logdir: Path
) -> tuple[Proc, str]:
    port = _free_port()
    env = {**fake_env, **target.env, "VANTUM_PORT": str(port), "PEER_PORT": str(port)}
    proc = Proc(
        target.name, [*target.argv, "--port", str(port)], env, cores, logdir / f"{target.name}.log"
    )
    proc.wait_port(port)
    _nice_workers(proc)
    return proc, f"ws://127.0.0.1:{port}/ws"


def _nice_workers(proc: Proc) -> None:
    """Give ``--nice`` to the autogroups of ``vantum serve --workers N``'s workers.

    The supervisor starts each worker in its own session (so a terminal's Ctrl-C
    reaches the supervisor only), hence its own autogroup at nice 0: without this a
    two-worker server would weigh a tenth of the one-worker server it is compared
    with on a machine busy with other work. Each inherits the process nice value."""
    if not _NICE:
        return
    for child in proc.ps.children(recursive=True):
        with contextlib.suppress(OSError):
            Path(f"/proc/{child.pid}/autogroup").write_text(str(_NICE))


async def run_step(
    url: str, n: int, clips: Sequence[tuple[bytes, int]], wl: Workload, target: Target
) -> list[Session]:
    sessions = [Session() for _ in range(n)]
    speech = max(len(p) / 2 / r for p, r in clips)
    limit = wl.ramp + wl.turns * (speech + 25.0) + 10.0
    start = trio.current_time() + 0.1
    with trio.move_on_after(limit):
        async with trio.open_nursery() as nursery:
            for i, s in enumerate(sessions):
                at = start + wl.ramp * i / n
                play = replay_twilio_session if target.protocol == "twilio" else replay_session
                nursery.start_soon(play, url, i, clips, wl, s, at, target.expect_metrics)
    return sessions


async def probe_fake_llm(
    env: dict[str, str], wl: Workload, late: list[float], period: float = 0.25
) -> None:
    """While a step runs: a bare client asks the fake LLM for a stream every
    ``period`` s and records how much later than modelled its first chunk came.

    The fakes and the load generator share a core; when that core is busy the
    fake's first token is late for *every* server, and the server's latency tail
    inherits it. The probe prices that directly (no server in its path), so a
    step's p99 can be read against the load side's own p99 (issue 21: "the run
    reports when they, not the server, are the limit")."""
    import httpx

    headers = {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    endpoint = env["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        while True:
            next_at = trio.current_time() + period
            t0 = trio.current_time()
            async with http.stream("POST", endpoint, json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        late.append(trio.current_time() - t0 - wl.llm_first_token)
                        break
            await trio.sleep_until(next_at)


async def idle_rss(url: str, proc: Proc, k: int) -> dict[str, float]:
    """Open ``k`` sessions that say nothing; the server's RSS growth per session."""
    from vantum.testing.browser_client import BrowserClient

    before = proc.rss()
    opened = 0
    done = trio.Event()
    ready = trio.Semaphore(0)

    async def hold() -> None:
        nonlocal opened
        async with BrowserClient.connect(url) as client:
            await client.send(ev.INPUT_START, {"samplingRate": 16_000})
            opened += 1
            ready.release()
            await done.wait()

    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(k):
                nursery.start_soon(hold)
                await trio.sleep(0.005)
            for _ in range(k):
                await ready.acquire()
            await trio.sleep(2.0)  # let provider connections settle
            after = proc.rss()
            done.set()
    grown = max(0, after - before) if opened else 0
    return {
        "sessions": opened,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1) if opened else math.nan,
        "per_session_kb": round(grown / max(opened, 1) / 1024, 1),
    }


@attrs.define
class Running:
    """A started server under test and what was measured on it so far."""

    target: Target
    proc: Proc
    url: str
    out: dict[str, Any] = attrs.Factory(lambda: {"steps": []})
    done: bool = False


async def measure_step(
    run: Running,
    n: int,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
    fakes: Proc | None,
    ours: Sequence[Proc],
    quiet_wait: float,
) -> dict[str, Any]:
    """One load level on one server, with the CPU bookkeeping around it."""
    import psutil

    proc, me = run.proc, psutil.Process()
    waited = await wait_for_quiet(ours, quiet_wait)
    log_at = proc.log.stat().st_size if proc.log.exists() else 0
    t0, c0, m0 = time.monotonic(), proc.cpu(), me.cpu_times()
    f0, all0 = (fakes.cpu() if fakes else 0.0), sum(p.cpu() for p in ours)
    q0, busy0 = proc.runq_wait(), _busy()
    fq0, mq0 = (fakes.runq_wait() if fakes else 0.0), _runq_wait(os.getpid())
    recording = None
    if _PROFILE_DIR is not None:
        out = _PROFILE_DIR / f"{run.target.name}-{n}.txt"
        recording = pyspy.Recording(proc.popen.pid, out)
    probe_late: list[float] = []
    try:
        async with trio.open_nursery() as probing:
            if _FAKE_ENV:
                probing.start_soon(probe_fake_llm, _FAKE_ENV, wl, probe_late)
            sessions = await run_step(run.url, n, clips, wl, run.target)
            probing.cancel_scope.cancel()
    finally:
        profile = recording.stop() if recording is not None else None
    wall = time.monotonic() - t0
    m1 = me.cpu_times()
    step = {"sessions": n, **summarize(sessions, wl, wl.floor() + run.target.extra_floor)}
    cpu = proc.cpu() - c0
    fakes_cpu = (fakes.cpu() - f0) if fakes else 0.0
    load = float(m1.user + m1.system - m0.user - m0.system) + fakes_cpu
    step["server_cpu_s"] = round(cpu, 2)
    step["server_cpu_util"] = round(cpu / wall, 3)
    step["server_cpu_s_per_call_min"] = (
        round(cpu / step["call_minutes"], 3) if step["call_minutes"] else None
    )
    step["loadgen_cpu_util"] = round(load / wall, 3)  # includes the fakes
    # Everything the measurement ran: every server process (supervisor and workers),
    # the load generator and the fakes. What a call-minute costs this machine.
    step["total_cpu_s_per_call_min"] = (
        round((cpu + load) / step["call_minutes"], 3) if step["call_minutes"] else None
    )
    step["fakes_cpu_util"] = round(fakes_cpu / wall, 3)
    step["server_runqueue_wait_ms_per_s"] = round(1000 * (proc.runq_wait() - q0) / wall, 1)
    step["fakes_runqueue_wait_ms_per_s"] = round(
        1000 * ((fakes.runq_wait() - fq0) if fakes else 0.0) / wall, 1
    )
    step["loadgen_runqueue_wait_ms_per_s"] = round(1000 * (_runq_wait(os.getpid()) - mq0) / wall, 1)
    mine = sum(p.cpu() for p in ours) - all0 + float(m1.user + m1.system - m0.user - m0.system)
    step["other_processes_cpu_util"] = round(max(0.0, _busy() - busy0 - mine) / wall, 3)
    step["wall_s"] = round(wall, 1)
    step["waited_for_quiet_s"] = round(waited, 1)
    step["server_rss_mb"] = round(proc.rss() / 2**20, 1)
    if run.target.env.get("VANTUM_STALL_MS"):
        step["stalls"] = stall_report(proc.log, log_at)
    if profile is not None:
        step["profile"] = profile
    if probe_late:
        step["fake_llm_late_ms"] = _pct([1000 * x for x in probe_late])
    return step


_STALL = re.compile(r"event loop stalled ([0-9.]+) ms in task ([^\s\"]+)")
_GC = re.compile(r"garbage collection \(generation (\d)\) paused the loop ([0-9.]+) ms")


def stall_report(log: Path, offset: int) -> dict[str, Any]:
    """What the server's stall monitor (``--stall-ms``) logged from ``offset`` on:
    loop stalls by task, and garbage collections over the same threshold."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    stalls = [(float(m[1]), m[2]) for m in _STALL.finditer(text)]
    gcs = [(int(m[1]), float(m[2])) for m in _GC.finditer(text)]
    by_task: dict[str, list[float]] = {}
    for ms, task in stalls:
        by_task.setdefault(task.rsplit(".", 1)[-1], []).append(ms)
    top = sorted(by_task.items(), key=lambda kv: -len(kv[1]))[:6]
    return {
        "count": len(stalls),
        "max_ms": max((ms for ms, _ in stalls), default=0.0),
        "by_task": {k: {"count": len(v), "max_ms": max(v)} for k, v in top},
        "gc_pauses": len(gcs),
        "gc_max_ms": max((ms for _, ms in gcs), default=0.0),
        "gc_by_generation": {
            str(g): sum(1 for gen, _ in gcs if gen == g) for g in sorted({g for g, _ in gcs})
        },
    }


async def measure_all(
    targets: Sequence[Target],
    sizes: dict[str, list[int]],
    idle_k: int,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
    fake_env: dict[str, str],
    cores: tuple[set[int] | None, Proc | None],
    logdir: Path,
    quiet_wait: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Every server up at once, load levels interleaved (each level on each server in
    turn), so a change in the machine's background load hits all of them alike."""
    server_cores, fakes = cores
    async with started_servers(targets, fake_env, server_cores, logdir, clips, wl) as (
        running,
        results,
    ):
        ours = [r.proc for r in running] + ([fakes] if fakes else [])
        for run in running:
            if idle_k and run.target.protocol == "browser":
                run.out["idle_rss"] = await idle_rss(run.url, run.proc, idle_k)
        for n in sorted({n for r in running for n in sizes[r.target.name]}):
            for run in running:
                if run.done or n not in sizes[run.target.name]:
                    continue
                step = await measure_step(run, n, clips, wl, fakes, ours, quiet_wait)
                run.out["steps"].append(step)
                print(_row(run.target.name, step), flush=True)
                if step["turns_answered"] < 0.5 * step["turns"]:
                    print(f"  {run.target.name}: most turns unanswered at {n}; its sweep ends")
                    run.done = True
                await trio.sleep(1.0)
    return results


@asynccontextmanager
async def started_servers(
    targets: Sequence[Target],
    fake_env: dict[str, str],
    server_cores: set[int] | None,
    logdir: Path,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
) -> AsyncIterator[tuple[list[Running], dict[str, dict[str, Any]]]]:
    """Every server up at once for the block, each warmed up (lazy imports, first
    provider connections) before anything is measured; yields the running ones and
    the results by server name (a server that did not start is there as skipped,
    with its log's tail printed). Leaving the block stops each by its own PID."""
    results: dict[str, dict[str, Any]] = {}
    running: list[Running] = []
    try:
        for target in targets:
            try:
                proc, url = start_target(target, fake_env, server_cores, logdir)
            except RuntimeError as exc:
                results[target.name] = {"skipped": str(exc)}
                log = logdir / f"{target.name}.log"
                print(f"{target.name}: {exc}\n{log.read_text()[-3000:] if log.exists() else ''}")
                continue
            running.append(Running(target, proc, url))
            results[target.name] = running[-1].out
        for run in running:
            await run_step(run.url, 2, clips, attrs.evolve(wl, turns=1, ramp=0.2), run.target)
        yield running, results
    finally:
        for run in running:
            run.proc.stop()


def holds(step: dict[str, Any], overhead_ms: float | None, budget_ms: float = 50.0) -> bool:
    """The bound: p99 added latency (net of the fakes' overhead) within ``budget_ms``,
    no underrun, every turn answered."""
    p99 = step["added_ms"]["p99"]
    if p99 is None:
        return False
    return bool(
        float(p99) - (overhead_ms or 0.0) <= budget_ms
        and step["underrun_turns"] == 0
        and step["turns_answered"] == step["turns"]
    )


def load_limited(step: dict[str, Any], max_util: float = 0.85, max_wait_ms: float = 150.0) -> str:
    """Why the load side (load generator + fakes, one core) may have shaped this step,
    or "" if it kept up: its core nearly full, or its processes waiting for a CPU."""
    reasons = []
    if step["loadgen_cpu_util"] > max_util * _load_cores():
        reasons.append(f"load generator + fakes {step['loadgen_cpu_util']:.0%} of their core")
    wait = step["fakes_runqueue_wait_ms_per_s"] + step["loadgen_runqueue_wait_ms_per_s"]
    if wait > max_wait_ms:
        reasons.append(f"load side waited {wait:.0f} ms/s for a CPU")
    return "; ".join(reasons)


async def measure_knee(
    targets: Sequence[Target],
    search: KneeSearch,
    clips: Sequence[tuple[bytes, int]],
    wl: Workload,
    fake_env: dict[str, str],
    cores: tuple[set[int] | None, Proc | None],
    logdir: Path,
    quiet_wait: float = 0.0,
    overhead_ms: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Each server's knee (:mod:`knee`): raise, then bisect. All servers are up at once
    and the rounds interleave (each server's next step in turn), as in :func:`measure_all`."""
    server_cores, fakes = cores
    async with started_servers(targets, fake_env, server_cores, logdir, clips, wl) as (
        servers,
        results,
    ):
        running = [(run, attrs.evolve(search)) for run in servers]
        ours = [r.proc for r in servers] + ([fakes] if fakes else [])
        while True:
            todo = [(r, k, n) for r, k in running if (n := k.next_size()) is not None]
            if not todo:
                break
            for run, knee, n in todo:
                step = await measure_step(run, n, clips, wl, fakes, ours, quiet_wait)
                step["holds_bound"] = holds(step, overhead_ms)
                step["load_limited"] = load_limited(step)
                knee.record(n, step["holds_bound"], bool(step["load_limited"]))
                run.out["steps"].append(step)
                verdict = "holds" if step["holds_bound"] else "breaks"
                limit = f"  (load side: {step['load_limited']})" if step["load_limited"] else ""
                print(f"{_row(run.target.name, step)}  {verdict}{limit}", flush=True)
                await trio.sleep(1.0)
        for run, knee in running:
            run.out["knee"] = knee.report()
            at = [s for s in run.out["steps"] if s["sessions"] == knee.good]
            if at:
                run.out["knee"]["server_core_busy"] = at[0]["server_cpu_util"]
                run.out["knee"]["cpu_s_per_call_min"] = at[0]["server_cpu_s_per_call_min"]
    return results


def stack_floor(sessions: int, seconds: float, logdir: Path) -> dict[str, Any]:
    """The bare serving stack (``stack_floor.py``, mode ``both``) measured in this run:
    its CPU per WebSocket message, hence the sessions one core carries at a message rate."""
    script = Path(__file__).resolve().parent / "stack_floor.py"
    out = logdir / "stack_floor.json"
    argv = [sys.executable, str(script), "--modes", "both", "--sessions", str(sessions)]
    argv += ["--seconds", str(seconds), "--port", str(_free_port()), "--json", str(out)]
    with open(logdir / "stack_floor.log", "wb") as log:
        done = subprocess.run(argv, stdout=log, stderr=log, timeout=seconds + 120, check=False)
    if done.returncode or not out.exists():
        return {"skipped": f"stack_floor.py exited {done.returncode}: see its log"}
    (row,) = json.loads(out.read_text())["rows"]
    return {"floor": row}


async def wait_for_quiet(procs: Sequence[Proc], max_wait: float, cores: float = 0.25) -> float:
    """Give other work on the machine up to ``max_wait`` s to calm down (< ``cores`` busy).

    A shared machine's other processes compete with the pinned server for its core,
    and the numbers then measure the scheduler, not the server. Returns seconds waited.
    """
    import psutil

    me = psutil.Process()

    def ours() -> float:
        t = me.cpu_times()
        return sum(p.cpu() for p in procs) + float(t.user + t.system)

    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        b0, o0 = _busy(), ours()
        await trio.sleep(1.0)
        if (_busy() - b0) - (ours() - o0) < cores:
            break
    return time.monotonic() - start if max_wait > 0 else 0.0


def _busy() -> float:
    """CPU seconds the whole machine has been busy (all processes)."""
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def capacity(steps: Sequence[dict[str, Any]], budget_ms: float = 50.0) -> dict[str, Any]:
    """Largest tested load meeting the bar, and what CPU cost alone would allow.

    The bar: p99 added latency within ``budget_ms``, no underrun, every turn
    answered. Added latency is taken net of the fakes' own measured overhead when
    that calibration exists (``added_net_ms``), since a real provider has none of it.
    """
    key = "added_net_ms" if steps and "added_net_ms" in steps[0] else "added_ms"
    ok = [
        s["sessions"]
        for s in steps
        if s[key]["p99"] is not None
        and s[key]["p99"] <= budget_ms
        and s["underrun_turns"] == 0
        and s["turns_answered"] == s["turns"]
    ]
    costs = [s["server_cpu_s_per_call_min"] for s in steps if s["server_cpu_s_per_call_min"]]
    projected = int(60 / min(costs)) if costs else None
    limited = bool(steps) and bool(ok) and max(ok) == steps[-1]["sessions"]
    return {
        "capacity_latency_metric": key,
        "max_sessions_per_core_measured": max(ok) if ok else 0,
        "measured_is_largest_tested": limited,
        "cpu_projected_sessions_per_core": projected,
    }


# -------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


_HEADER = (
    f"{'server':<8} {'N':>4} {'v2v p50':>8} {'p99':>6} {'added p50':>9} {'p99':>6}"
    f" {'late p99':>8} {'undr':>5} {'ok/turns':>9} {'cpu s/min':>9} {'srv cpu':>7} {'gen cpu':>7}"
    f" {'fake p99':>8}"
)


def _row(name: str, s: dict[str, Any]) -> str:
    v, a = s["v2v_ms"], s["added_ms"]
    return (
        f"{name:<8} {s['sessions']:>4} {_fmt(v['p50']):>8} {_fmt(v['p99']):>6}"
        f" {_fmt(a['p50']):>9} {_fmt(a['p99']):>6} {_fmt(s['late_jitter_ms']['p99']):>8}"
        f" {s['underrun_turns']:>5} {s['turns_answered']:>4}/{s['turns']:<4}"
        f" {_fmt(s['server_cpu_s_per_call_min']):>9} {s['server_cpu_util']:>7.0%}"
        f" {s['loadgen_cpu_util']:>7.0%}"
        f" {_fmt((s.get('fake_llm_late_ms') or {}).get('p99')):>8}{_contended(s)}"
    )


def _contended(step: dict[str, Any]) -> str:
    """A warning when the scheduler, not the server, may have shaped this step."""
    notes = []
    if step.get("server_runqueue_wait_ms_per_s", 0) > 100:
        notes.append("server waited for CPU")
    if step.get("loadgen_cpu_util", 0) > 0.9 * _load_cores():
        notes.append("load generator saturated")
    return f"  ! {', '.join(notes)}" if notes else ""


def _load_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


_COLORS = {
    "vantum": "tab:blue",
    "vantum-twilio": "tab:green",
    "pipecat": "tab:orange",
    "vantum-1w": "tab:blue",
    "vantum-2w": "tab:purple",
}


def plot(result: dict[str, Any], path: Path) -> bool:
    """Latency and CPU cost against concurrent sessions, one colour per server."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (v2v, added, cpu) = plt.subplots(1, 3, figsize=(15, 4.4))
    for name, sysres in result["systems"].items():
        steps = sorted(sysres.get("steps") or [], key=lambda s: s["sessions"])  # knee: bisected
        if not steps:
            continue
        color = _COLORS.get(name)
        knee_row = sysres.get("knee") or {}
        knee = knee_row.get("knee_sessions")
        if knee:
            bound = "" if knee_row.get("outcome") in ("found", "cap") else " (lower bound)"
            added.axvline(knee, color=color, lw=1.2, alpha=0.6, label=f"{name} knee {knee}{bound}")
        xs = [s["sessions"] for s in steps]
        key = "added_net_ms" if "added_net_ms" in steps[0] else "added_ms"
        for pct, style in (("p50", "o-"), ("p99", "s--")):
            v2v.plot(
                xs, [s["v2v_ms"][pct] for s in steps], style, color=color, label=f"{name} {pct}"
            )
            added.plot(
                xs,
                [max(1.0, s[key][pct] or 1.0) for s in steps],
                style,
                color=color,
                label=f"{name} {pct}",
            )
        cpu.plot(xs, [s["server_cpu_s_per_call_min"] for s in steps], "o-", color=color, label=name)
    v2v.axhline(
        result["provider_floor_ms"], color="grey", lw=0.8, ls=":", label="provider floor (modelled)"
    )
    added.axhline(50, color="red", lw=0.8, ls=":", label="50 ms budget")
    v2v.set(title="Voice-to-voice at the client", ylabel="ms", yscale="log")
    net = "" if "fakes_calibration" not in result else " (net of the fakes' overhead)"
    added.set(title=f"Added latency{net}", ylabel="ms", yscale="log")
    cpu.set(title="Server CPU per call-minute", ylabel="CPU seconds", ylim=(0, None))
    for ax in (v2v, added, cpu):
        ax.set_xlabel("concurrent sessions (server pinned to 1 core)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    machine = result["machine"]
    fig.suptitle(
        f"Vantum replay benchmark, {result['date'][:10]}, {machine['nproc']} x "
        f"{machine['cpu_model']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- cli


def load_clips(folder: Path | None) -> list[tuple[bytes, int]]:
    """Speech fixtures from ``folder``, or the same sentences synthesised now."""
    if folder is not None and folder.is_dir():
        wavs = sorted(folder.glob("*.wav"))
        if wavs:
            return [read_wav(w) for w in wavs]
    from vantum.audio.resample import StreamResampler
    from vantum.providers.local_tts import EspeakTTS, synthesize_blocking

    clips = []
    for text in FIXTURE_TEXTS:
        speech = synthesize_blocking(text)
        rs = StreamResampler(EspeakTTS().sample_rate, 16_000)
        pad = bytes(2 * 16_000 // 4)
        clips.append((pad + rs.process(speech.pcm) + rs.flush() + pad, 16_000))
    return clips


def benchmarks_dir() -> Path:
    """The checkout's ``benchmarks/`` (fixtures, peer, results), or ``./benchmarks``."""
    for candidate in (
        Path.cwd() / "benchmarks",
        Path(__file__).resolve().parent,  # this file's own benchmarks/
    ):
        if (candidate / "fixtures").is_dir():
            return candidate
    return Path.cwd() / "benchmarks"


def configure_parser(p: argparse.ArgumentParser, root: Path | None = None) -> None:
    """Add the benchmark's options to ``p`` (``vantum bench`` and benchmarks/replay.py)."""
    here = root or benchmarks_dir()
    p.add_argument("--sizes", default="10,15,20,30,40", help="concurrent sessions per step")
    p.add_argument("--peer-sizes", default="10,15,20,30", help="steps for the Pipecat peer")
    p.add_argument(
        "--twilio-sizes", default="10,20", help="steps with phone (Twilio) callers; '' skips"
    )
    p.add_argument("--turns", type=int, default=3, help="turns per session")
    p.add_argument("--idle", type=int, default=200, help="idle sessions for the RSS figure")
    p.add_argument("--quick", action="store_true", help="small run (< 60 s, no peer) for CI")
    p.add_argument("--fixtures", type=Path, default=here / "fixtures")
    p.add_argument("--out", type=Path, default=here / "results" if here.is_dir() else Path("."))
    p.add_argument("--no-pin", action="store_true", help="do not pin the server to one core")
    p.add_argument(
        "--workers",
        default="1",
        help="vantum serve --workers N (pinned to N cores if one is left for the load "
        "generator; server CPU and RSS are summed over the supervisor and its workers). "
        "A list (1,2) runs one server per count in the same run, unpinned, load levels "
        "interleaved, and ends with the scaling ratio (sessions held within the bar)",
    )
    p.add_argument(
        "--bar-ms",
        type=float,
        default=50.0,
        help="the bar for sessions held: p99 added latency (net of the fakes) within this, "
        "no underrun, every turn answered (default 50)",
    )
    p.add_argument("--no-peer", action="store_true", help="skip the Pipecat comparison")
    p.add_argument(
        "--peer-python",
        default=os.environ.get(
            "VANTUM_PEER_PYTHON", str(Path.home() / ".cache/vantum/pipecat-venv/bin/python")
        ),
    )
    p.add_argument("--peer-script", type=Path, default=here / "peers" / "pipecat_server.py")
    p.add_argument(
        "--peer-vad",
        choices=("none", "silero"),
        default="none",
        help="the Pipecat peer runs Pipecat's Silero VAD on the caller's audio too (its "
        "cost only; the client still ends turns): Silero for Silero against Vantum's default",
    )
    p.add_argument("--jitter-buffer-ms", type=float, default=0.0)
    p.add_argument(
        "--frame-ms",
        type=int,
        default=20,
        help="audio per message from browser callers (the page sends 20; Twilio always 20)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each step, wait up to this many seconds for other processes to go idle",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness for all benchmark processes (negative needs root); "
        "on a machine busy with other work, e.g. -10 keeps the scheduler out of the figures",
    )
    p.add_argument(
        "--server-profile",
        type=Path,
        help="run the Vantum server under cProfile and write the stats here",
    )
    p.add_argument(
        "--knee",
        action="store_true",
        help="find each server's knee (raise sessions until p99 added > 50 ms or an "
        "underrun, then bisect) instead of measuring --sizes; also measures the bare stack",
    )
    p.add_argument("--knee-start", type=int, default=10, help="first load of the knee sweep")
    p.add_argument("--knee-max", type=int, default=400, help="largest load the sweep tries")
    p.add_argument(
        "--knee-servers",
        default="vantum,vantum-twilio,pipecat,floor",
        help="servers in the knee sweep (floor: the bare serving stack, stack_floor.py)",
    )
    p.add_argument(
        "--stall-ms",
        type=float,
        default=None,
        help="run the server's loop-stall monitor (VANTUM_STALL_MS) and report, per step, "
        "task steps and garbage collections longer than this",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record every step of every server with py-spy (sampling, from outside, "
        "never pausing it) into DIR/<server>-<sessions>.txt and report each step's CPU "
        "by area (VAD model, WebSocket stack, scheduler, own code)",
    )
    p.add_argument(
        "--stall-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what --stall-ms times: wall time (counts preemption on a busy machine) or "
        "the loop thread's CPU time",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the Vantum server (repeatable)",
    )


def _twilio_extra_floor(wl: Workload) -> float | None:
    """What phone turns add to the browser floor: the VAD's end-of-speech silence, less
    the STT final when the server speculates (starts the LLM on the interim)."""
    try:
        from vantum.audio.vad import VadSegmenter
        from vantum.pipeline.turns import TurnPolicy
        from vantum.testing import fake_twilio  # noqa: F401
    except ImportError:
        return None
    silence = int(attrs.fields(VadSegmenter).silence_ms.default or 0) / 1000
    speculate = bool(
        getattr(attrs.fields(TurnPolicy), "speculate", None) is not None
        and attrs.fields(TurnPolicy).speculate.default
    )
    return silence - (wl.stt_final if speculate else 0.0)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.sizes, args.peer_sizes, args.turns, args.idle = "10,30", "10", 1, 50
        args.twilio_sizes = "" if not args.knee else args.twilio_sizes
        args.quiet_wait = min(args.quiet_wait, 2.0)
        args.no_peer = not args.knee or args.no_peer
    if args.knee:
        args.idle = 0
        knee_servers = set(args.knee_servers.split(","))
    if not 10 <= args.frame_ms <= 1000:
        raise SystemExit("--frame-ms must be 10..1000")
    wl = Workload(
        turns=args.turns,
        chunk_ms=args.frame_ms,
        jitter_buffer_ms=args.jitter_buffer_ms,
        ramp=2.0 if args.quick else 4.0,
    )
    clips = load_clips(args.fixtures)
    global _NICE, _PROFILE_DIR
    _NICE = args.nice
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        _PROFILE_DIR = args.profile
    own_session = os.getsid(0) == os.getpid()
    if args.nice and not own_session:
        # The load generator's own autogroup, as for the other roles (this also
        # detaches it from the terminal: stop it with kill -INT <pid>).
        with contextlib.suppress(OSError):  # a process group leader cannot
            os.setsid()
            own_session = True
    _raise_priority(own_session)
    ncpu = len(os.sched_getaffinity(0))
    worker_counts = _ints(args.workers)
    if not worker_counts or min(worker_counts) < 1:
        raise SystemExit("--workers must be 1 or more (or a list: 1,2)")
    pinnable = sorted(os.sched_getaffinity(0))[: max(worker_counts)]
    # The server gets --workers cores when the load generator keeps at least one; servers
    # of different worker counts, side by side, are compared unpinned.
    pin = not args.no_pin and len(worker_counts) == 1 and ncpu > worker_counts[0]
    server_cores = set(pinnable) if pin else None
    other = None if server_cores is None else os.sched_getaffinity(0) - server_cores
    if other:
        os.sched_setaffinity(0, other)
    vantum = [
        Target(
            "vantum",
            [
                sys.executable,
                *(
                    ["-m", "cProfile", "-o", str(args.server_profile)]
                    if args.server_profile
                    else []
                ),
                "-m",
                "vantum.cli",
                "serve",
            ],
            True,
            {
                "VANTUM_LOG_LEVEL": "WARNING",
                "VANTUM_MAX_SESSIONS": "5000",
                # --workers (default 1: the fakes' keys would otherwise mean one
                # worker per core).
                "VANTUM_WORKERS": str(worker_counts[0]),
                # Each worker's own /metrics port: free ones (the default, the main
                # port + 1 + index, can collide with another server of the same run).
                "VANTUM_WORKER_METRICS_PORT": "0",
                # One load generator opens hundreds of calls from one address; a token
                # check costs one HMAC per connection, nothing per frame.
                "VANTUM_INSECURE_NO_AUTH": "1",
                "VANTUM_CONNECT_RATE": "0",
                "VANTUM_TWILIO_CONNECT_RATE": "0",
                **(
                    {
                        "VANTUM_STALL_MS": f"{args.stall_ms:g}",
                        "VANTUM_STALL_CLOCK": args.stall_clock,
                    }
                    if args.stall_ms
                    else {}
                ),
                **dict(kv.split("=", 1) for kv in args.server_env),
            },
        )
    ]
    sizes = {"vantum": _ints(args.sizes), "pipecat": _ints(args.peer_sizes)}
    if len(worker_counts) > 1:
        vantum = [
            attrs.evolve(
                vantum[0],
                name=f"vantum-{n}w",
                env={**vantum[0].env, "VANTUM_WORKERS": str(n)},
            )
            for n in worker_counts
        ]
        sizes.update({t.name: sizes["vantum"] for t in vantum})
    targets = list(vantum)
    twilio_floor = _twilio_extra_floor(wl)
    if (args.knee or _ints(args.twilio_sizes)) and twilio_floor is not None:
        targets.append(
            attrs.evolve(
                targets[0], name="vantum-twilio", protocol="twilio", extra_floor=twilio_floor
            )
        )
        sizes["vantum-twilio"] = _ints(args.twilio_sizes)
    peer_note = None
    if not args.no_peer:
        if Path(args.peer_python).exists() and args.peer_script.exists():
            argv = [args.peer_python, str(args.peer_script), "--vad", args.peer_vad]
            targets.append(Target("pipecat", argv, False))
        else:
            peer_note = (
                f"skipped: {args.peer_python} or {args.peer_script} missing "
                "(run benchmarks/peers/setup_pipecat.sh)"
            )
            print(f"pipecat peer {peer_note}")
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "server_pinned_cores": sorted(server_cores) if server_cores else None,
        "server_workers": worker_counts,
        "nice": args.nice,
        "peer_vad": args.peer_vad,
        "workload": attrs.asdict(wl),
        "provider_floor_ms": round(1000 * wl.floor(), 1),
        "fixtures": [round(len(p) / 2 / r, 2) for p, r in clips],
        "systems": {},
    }
    if peer_note:
        result["systems"]["pipecat"] = {"skipped": peer_note}
    if args.knee:
        targets = [t for t in targets if t.name in knee_servers]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vantum-bench-") as tmp:
        logdir = Path(tmp)
        fakes = Proc(
            "fakes",
            [sys.executable, str(Path(__file__).resolve()), "_fakes", json.dumps(attrs.asdict(wl))],
            {},
            other,
            logdir / "fakes.log",
        )
        try:
            fake_env = json.loads(fakes.read_line(30))
            _FAKE_ENV.update(fake_env)
            try:
                cal = trio.run(calibrate_fakes, fake_env, clips[0][0], wl)
                result["fakes_calibration"] = cal
                print(
                    f"fakes measured by a bare client: {cal['measured_ms']} "
                    f"(overhead over the model {cal['fake_overhead_ms']} ms)"
                )
            except (OSError, ValueError, KeyError) as exc:  # informative only
                print(f"fake calibration failed: {exc!r}")
            print(
                f"provider floor {result['provider_floor_ms']} ms; server on cores "
                f"{result['server_pinned_cores']}\n{_HEADER}",
                flush=True,
            )
            if args.knee:
                search = (
                    KneeSearch(args.knee_start, 2.0, 10, args.knee_max, max_steps=4)
                    if args.quick
                    else KneeSearch(args.knee_start, 1.5, 4, args.knee_max, max_steps=9)
                )
                result["knee_search"] = attrs.asdict(search, value_serializer=_plain)
                result["systems"].update(
                    trio.run(
                        partial(
                            measure_knee,
                            targets,
                            search,
                            clips,
                            wl,
                            fake_env,
                            (server_cores, fakes),
                            logdir,
                            args.quiet_wait,
                            (result.get("fakes_calibration") or {}).get("fake_overhead_ms"),
                        )
                    )
                )
                if "floor" in knee_servers:
                    n = 40 if args.quick else 100
                    print(f"bare serving stack: {n} sessions, 20 ms in + 40 ms out ...")
                    result["systems"]["floor"] = stack_floor(n, 6.0 if args.quick else 15.0, logdir)
            else:
                result["systems"].update(
                    trio.run(
                        measure_all,
                        targets,
                        sizes,
                        args.idle,
                        clips,
                        wl,
                        fake_env,
                        (server_cores, fakes),
                        logdir,
                        args.quiet_wait,
                    )
                )
        finally:
            fakes.stop()
    overhead = result.get("fakes_calibration", {}).get("fake_overhead_ms")
    for sysres in result["systems"].values():
        for step in sysres.get("steps", []):
            if overhead is not None:
                step["added_net_ms"] = {
                    k: None if v is None else round(v - overhead, 1)
                    for k, v in step["added_ms"].items()
                }
    for sysres in result["systems"].values():
        if "steps" in sysres:
            sysres.update(capacity(sysres["steps"], args.bar_ms))
    result["bar_ms"] = args.bar_ms
    if args.knee:
        result["knee"] = knee_table(result["systems"])
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["comparison"] = compare(result["systems"])
    result["scaling"] = scaling(result["systems"])
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    drew = plot(result, args.out / "latest.png")
    print_summary(result)
    if "knee" in result:
        print_knee(result["knee"])
    print(f"wrote {args.out / 'latest.json'}" + (f" and {args.out / 'latest.png'}" if drew else ""))
    return 0


def _plain(_inst: Any, _field: Any, value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def knee_table(systems: dict[str, Any]) -> dict[str, Any]:
    """Max sessions per core within the bound, side by side, with the bare stack's
    floor at the browser call's own message rate (CPU-projected: the stack alone has
    no latency bound to break before its core is full)."""
    rows: dict[str, Any] = {}
    for name, sysres in systems.items():
        if "knee" in sysres:
            rows[name] = dict(sysres["knee"])
    floor = systems.get("floor", {}).get("floor")
    browser = systems.get("vantum", {}).get("steps") or []
    rates = [
        s["client_messages_per_session_s"]
        for s in browser
        if s.get("client_messages_per_session_s")
    ]
    if floor:
        row: dict[str, Any] = {
            "us_per_message": floor["server_cpu_us_per_message"],
            "sessions_per_core_at_its_mix": floor["sessions_per_core_on_the_stack_alone"],
            "outcome": "cpu_projected",
        }
        if rates:
            rate = float(np.median(rates))
            row["call_messages_per_session_s"] = rate
            row["sessions_per_core_at_call_mix"] = int(
                1e6 / (floor["server_cpu_us_per_message"] * rate)
            )
        rows["floor"] = row
    # A knee the load side cut short (or never found) is a lower bound: no ratio from it.
    measured = ("found", "cap", "cpu_projected")

    def knee_of(name: str) -> Any:
        row = rows.get(name, {})
        if row.get("outcome") not in measured:
            return None
        return row.get("knee_sessions") or row.get("sessions_per_core_at_call_mix")

    v = knee_of("vantum")
    for name in ("pipecat", "floor"):
        theirs = knee_of(name)
        if v and theirs:
            rows.setdefault("ratios", {})[f"vantum/{name}"] = round(v / theirs, 2)
    return rows


def print_knee(table: dict[str, Any]) -> None:
    print("\nknee: max sessions on one core within p99 added <= 50 ms (net), no underrun")
    for name, row in table.items():
        if name == "ratios":
            print("ratios: " + ", ".join(f"{k} {r}" for k, r in row.items()))
        elif name == "floor":
            mix = row.get("sessions_per_core_at_call_mix")
            print(
                f"  floor (bare stack, CPU-projected): {row['us_per_message']} us/message; "
                f"{row['sessions_per_core_at_its_mix']} sessions at 50 in + 25 out msg/s"
                + (
                    f", {mix} at the browser call's {row['call_messages_per_session_s']} msg/s"
                    if mix
                    else ""
                )
            )
        else:
            busy = row.get("server_core_busy")
            detail = (
                f", core {busy:.0%} busy, {row.get('cpu_s_per_call_min')} CPU s/call-min"
                if busy
                else ""
            )
            limit = {
                "load_generator_limit": " (the load generator, not the server, was the limit: "
                "the knee is above this)",
                "cap": " (the sweep's cap)",
                "out_of_steps": " (step budget ran out: knee between this and the next)",
                "none_passed": " (even the smallest load broke the bound)",
            }.get(str(row.get("outcome")), "")
            if row.get("knee_sessions") is None and row.get("outcome") == "load_generator_limit":
                print(f"  {name}: not measured: the load side was the limit at the first step")
                continue
            print(
                f"  {name}: {row.get('knee_sessions')} (first broken "
                f"{row.get('first_broken_sessions')}){detail}{limit}"
            )


def compare(systems: dict[str, Any]) -> dict[str, Any]:
    """Pipecat / Vantum at the largest load both were measured at."""
    v, p = systems.get("vantum", {}), systems.get("pipecat", {})
    vs = {s["sessions"]: s for s in v.get("steps", [])}
    ps = {s["sessions"]: s for s in p.get("steps", [])}
    common = sorted(set(vs) & set(ps))
    if not common:
        return {}
    out: dict[str, Any] = {"at_sessions": common[-1], "by_sessions": {}}
    for n in common:
        a, b = vs[n], ps[n]
        row: dict[str, Any] = {}
        for key, pick in (
            ("v2v_p50", ("v2v_ms", "p50")),
            ("added_p50", ("added_ms", "p50")),
            ("added_p99", ("added_ms", "p99")),
        ):
            x, y = a[pick[0]][pick[1]], b[pick[0]][pick[1]]
            row[key] = {
                "vantum": x,
                "pipecat": y,
                "ratio": round(y / x, 2) if x and y and x > 0 else None,
            }
        x, y = a["server_cpu_s_per_call_min"], b["server_cpu_s_per_call_min"]
        row["cpu_s_per_call_min"] = {
            "vantum": x,
            "pipecat": y,
            "ratio": round(y / x, 2) if x and y else None,
        }
        out["by_sessions"][str(n)] = row
    rv, rp = v.get("idle_rss", {}), p.get("idle_rss", {})
    if rv and rp and rv.get("per_session_kb"):
        out["idle_rss_kb"] = {
            "vantum": rv["per_session_kb"],
            "pipecat": rp["per_session_kb"],
            "ratio": round(rp["per_session_kb"] / rv["per_session_kb"], 2),
        }
    return out


def scaling(systems: dict[str, Any]) -> dict[str, Any]:
    """Sessions held within the bar by each ``vantum-<N>w`` server of the run, the
    ratio of each to one worker's, and the whole machine's CPU per call-minute at
    the largest load each held (servers + load generator + fakes)."""
    servers = {
        int(name[len("vantum-") : -1]): res
        for name, res in systems.items()
        if name.startswith("vantum-") and name.endswith("w") and "steps" in res
    }
    if 1 not in servers or len(servers) < 2:
        return {}
    out: dict[str, Any] = {}
    base = servers[1]["max_sessions_per_core_measured"]
    for n, res in sorted(servers.items()):
        held = res["max_sessions_per_core_measured"]
        at = {s["sessions"]: s for s in res["steps"]}.get(held, {})
        out[f"{n}w"] = {
            "sessions_held": held,
            "held_is_largest_tested": res["measured_is_largest_tested"],
            "ratio_to_1w": round(held / base, 2) if base else None,
            "server_cpu_s_per_call_min": at.get("server_cpu_s_per_call_min"),
            "total_cpu_s_per_call_min": at.get("total_cpu_s_per_call_min"),
        }
    return out


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{_HEADER}")
    for name, sysres in result["systems"].items():
        for s in sysres.get("steps", []):
            print(_row(name, s))
    for name, sysres in result["systems"].items():
        if "skipped" in sysres:
            print(f"{name}: {sysres['skipped']}")
            continue
        if "steps" not in sysres:
            continue  # the bare stack (--knee): see the knee table
        rss = sysres.get("idle_rss")
        parts = [f"{rss['per_session_kb']} KB RSS per idle session"] if rss else []
        largest = " (largest tested)" if sysres.get("measured_is_largest_tested") else ""
        parts.append(
            f"max sessions/core within {result.get('bar_ms', 50.0):g} ms p99 "
            f"{sysres.get('max_sessions_per_core_measured')}"
            f"{largest}, CPU-projected {sysres.get('cpu_projected_sessions_per_core')}"
        )
        print(f"{name}: " + "; ".join(parts))
    for name, row in result.get("scaling", {}).items():
        largest = " (largest tested)" if row["held_is_largest_tested"] else ""
        print(
            f"scaling {name}: {row['sessions_held']} sessions held{largest}, "
            f"{row['ratio_to_1w']}x one worker; CPU s per call-minute there: server "
            f"{row['server_cpu_s_per_call_min']}, all (+ load generator and fakes) "
            f"{row['total_cpu_s_per_call_min']}"
        )
    comp = result.get("comparison", {}).get("by_sessions", {})
    for n, row in comp.items():
        print(f"pipecat/vantum at {n}: " + ", ".join(f"{k} {r['ratio']}" for k, r in row.items()))


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_fakes"]:
        wl = Workload(**json.loads(argv[1]))
        trio.run(serve_fakes, wl)
        return 0
    parser = argparse.ArgumentParser(
        prog="vantum bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser, root)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
