"""The Pipecat peer for the replay benchmark: one Pipecat pipeline per WebSocket call.

Runs in its own environment (``benchmarks/peers/setup_pipecat.sh``), never in
Vantum's. It is the stock Pipecat voice pipeline --

    FastAPIWebsocketTransport.input -> DeepgramSTTService -> user aggregator
    -> OpenAILLMService -> CartesiaTTSService -> transport.output -> assistant aggregator

-- served by FastAPI/uvicorn, with the three services pointed at the same fake
providers as Vantum through their documented URL overrides (``base_url`` /
``url``). The only adapter is :class:`VantumProtocolSerializer`, the smallest
serializer that lets the benchmark's browser-protocol client talk to it:

* ``audio.input.chunk`` -> ``InputAudioRawFrame``;
* ``audio.input.start`` / ``audio.input.end`` -> ``VADUserStartedSpeakingFrame`` /
  ``VADUserStoppedSpeakingFrame`` (the client says when it starts and stops
  talking, as in Vantum's manual turn mode; the stop also makes Pipecat's
  Deepgram service send ``Finalize``);
* ``OutputAudioRawFrame`` -> ``audio.output.chunk``; the end of an answer's TTS
  (``TTSStoppedFrame``) -> ``audio.output.complete``.

The turn ends on the finalized transcript (``SpeechTimeoutUserTurnStopStrategy``
with ``user_speech_timeout=0``), so Pipecat waits for no silence timer the client
already resolved: the same rule as Vantum's manual mode.

It runs no VAD unless ``--vad silero`` (``replay.py --peer-vad silero``): then each
call's user aggregator runs Pipecat's ``SileroVADAnalyzer`` on the caller's audio, for
its cost only (the client still ends turns), so the two servers pay for the same model.

Environment: DEEPGRAM_URL/DEEPGRAM_API_KEY, OPENAI_BASE_URL/OPENAI_API_KEY,
CARTESIA_URL/CARTESIA_API_KEY (as printed by ``vantum fakes``). Usage:
``python pipecat_server.py --port 8765`` then connect to ``ws://127.0.0.1:8765/ws``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from urllib.parse import urlsplit

import msgpack
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

RATE = 16_000
SYSTEM = "You are a helpful voice assistant. Answer briefly."


def envelope(event_type: str, session_id: str, payload: dict) -> dict:
    return {
        "eventType": event_type,
        "eventId": str(uuid.uuid4()),
        "sessionId": session_id,
        "payload": payload,
    }


class VantumProtocolSerializer(FrameSerializer):
    """docs/protocol.md's audio subset, mapped onto Pipecat frames."""

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.rate = RATE
        self.utterance = str(uuid.uuid4())

    async def serialize(self, frame: Frame) -> bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            payload = {
                "audio": frame.audio,
                "utteranceId": self.utterance,
                "sampleRate": frame.sample_rate,
            }
            return msgpack.packb(envelope("audio.output.chunk", self.session_id, payload))
        if isinstance(frame, OutputTransportMessageFrame) and "eventType" in frame.message:
            if frame.message["eventType"] == "audio.output.complete":
                frame.message["payload"]["utteranceId"] = self.utterance
                self.utterance = str(uuid.uuid4())
            return msgpack.packb(frame.message)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if not isinstance(data, bytes):
            return None
        try:
            event = msgpack.unpackb(data, raw=False)
        except ValueError:
            return None
        kind = event.get("eventType")
        payload = event.get("payload") or {}
        if kind == "audio.input.chunk":
            return InputAudioRawFrame(audio=payload["audio"], sample_rate=self.rate, num_channels=1)
        if kind == "audio.input.start":
            self.rate = int(payload.get("samplingRate", RATE))
            return VADUserStartedSpeakingFrame()
        if kind == "audio.input.end":
            return VADUserStoppedSpeakingFrame(stop_secs=0.0)
        return None


class AnswerEnd(FrameProcessor):
    """After an answer's last TTS frame, queue ``audio.output.complete`` behind its audio."""

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            message = envelope("audio.output.complete", self.session_id, {})
            await self.push_frame(OutputTransportMessageFrame(message=message))


def _ws_base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


app = FastAPI()
VAD = "none"
"""``--vad``: whether each call's pipeline runs Silero on the caller's audio."""


@app.websocket("/ws")
async def call(websocket: WebSocket) -> None:
    await websocket.accept()
    session_id = str(uuid.uuid4())
    ack = envelope("connection.lifecycle.ack", session_id, {"success": True})
    await websocket.send_bytes(msgpack.packb(ack))

    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=RATE,
            audio_out_sample_rate=RATE,
            serializer=VantumProtocolSerializer(session_id),
        ),
    )
    stt = DeepgramSTTService(
        api_key=os.environ["DEEPGRAM_API_KEY"],
        base_url=_ws_base(os.environ["DEEPGRAM_URL"]),
        sample_rate=RATE,
        # Vantum's Deepgram settings; Deepgram's default (10 ms) would cut every
        # utterance into several finals, none of them answering the Finalize.
        settings=DeepgramSTTService.Settings(endpointing=300, utterance_end_ms=1000),
    )
    llm = OpenAILLMService(
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.environ["OPENAI_BASE_URL"],
        settings=OpenAILLMService.Settings(model="fake-model", system_instruction=SYSTEM),
    )
    tts = CartesiaTTSService(
        api_key=os.environ["CARTESIA_API_KEY"],
        url=os.environ["CARTESIA_URL"],
        settings=CartesiaTTSService.Settings(voice="a0e99841-438c-4a64-b679-ae501e7d6091"),
    )
    context = LLMContext()
    user_params: dict[str, object] = {}
    if VAD == "silero":
        # The VAD's cost in the peer, not its turn-taking: the client still says when
        # it starts and stops (above). Silero runs on every window of caller audio as
        # Vantum's does, and a stop after 30 s of silence never ends a replayed turn.
        user_params["vad_analyzer"] = SileroVADAnalyzer(
            sample_rate=RATE, params=VADParams(stop_secs=30.0)
        )
    strategies = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)],
    )
    user, assistant = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(user_turn_strategies=strategies, **user_params),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user,
            llm,
            tts,
            AnswerEnd(session_id),
            transport.output(),
            assistant,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_disconnected")
    async def _gone(_transport: object, _ws: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log-level", default=os.environ.get("PEER_LOG_LEVEL", "WARNING"))
    parser.add_argument(
        "--vad",
        choices=("none", "silero"),
        default="none",
        help="run Pipecat's SileroVADAnalyzer on the caller's audio (its cost only: the "
        "client still ends turns), for a Silero-for-Silero comparison with Vantum",
    )
    args = parser.parse_args()
    global VAD
    VAD = args.vad
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    logger.info(f"pipecat peer on ws://{args.host}:{args.port}/ws")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), ws_max_size=1 << 24
    )
    logger.info(f"stopped after {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
