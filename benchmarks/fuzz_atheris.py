"""Coverage-guided fuzzing (libFuzzer via atheris) of the wire decoders. Not part of pytest.

hypothesis (tests/test_fuzz.py) explores what we thought to generate; libFuzzer
mutates toward new branches on its own, so it finds what we did not think of.
The rule checked is the same: a decoder returns a value or raises its own
protocol error, never anything else.

    pip install atheris
    python benchmarks/fuzz_atheris.py -atheris_runs=200000            # browser envelope
    python benchmarks/fuzz_atheris.py --target twilio -max_total_time=60
    python benchmarks/fuzz_atheris.py --target twilio --print-seeds corpus/   # seed a corpus
    python benchmarks/fuzz_atheris.py --target twilio corpus/ -max_total_time=600

Unknown flags go to libFuzzer (``-runs=N`` is spelt ``-atheris_runs=N``). A crash
prints the input and writes it to ``crash-<sha1>``; replay it with
``python benchmarks/fuzz_atheris.py crash-<sha1>``.
"""

from __future__ import annotations

import argparse
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["vantum", "msgpack", "json"]):
    import msgpack

    from vantum.errors import ProtocolError
    from vantum.protocol import client_events, envelope
    from vantum.protocol.twilio import TwilioProtocolError, TwilioStreamState, parse_inbound

SESSION_ID = "0190b7f2-4c2e-7d3a-9b1e-5f6a7b8c9d0e"

SEEDS = [
    msgpack.packb(
        {
            "eventType": "audio.input.start",
            "eventId": "e1",
            "sessionId": SESSION_ID,
            "payload": {"samplingRate": 16000, "turnMode": "auto", "language": "en-US"},
        }
    ),
    msgpack.packb(
        {
            "eventType": "audio.input.chunk",
            "eventId": "e2",
            "sessionId": SESSION_ID,
            "payload": {"audio": b"\x00\x01" * 8, "isMuted": False},
        },
        use_bin_type=True,
    ),
    msgpack.packb(
        {
            "eventType": "conversation.text.input",
            "eventId": "e3",
            "sessionId": SESSION_ID,
            "payload": {"text": "hello"},
        }
    ),
]


TWILIO_SEEDS = [
    b'{"event":"connected","protocol":"Call","version":"1.0.0"}',
    b'{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"accountSid":"AC1",'
    b'"callSid":"CA1","streamSid":"MZ1","tracks":["inbound"],"mediaFormat":{"encoding":'
    b'"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"a":"b"}}}',
    b'{"event":"media","sequenceNumber":"2","streamSid":"MZ1","media":{"track":"inbound",'
    b'"chunk":"1","timestamp":"20","payload":"//////8="}}',
    b'{"event":"mark","sequenceNumber":"3","streamSid":"MZ1","mark":{"name":"m1"}}',
    b'{"event":"dtmf","sequenceNumber":"4","streamSid":"MZ1","dtmf":{"digit":"5"}}',
    b'{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1",'
    b'"callSid":"CA1"}}',
]


def browser_one_input(data: bytes) -> None:
    try:
        event = client_events.parse(envelope.decode(data), SESSION_ID)
    except ProtocolError as exc:
        if not exc.event_type or not exc.message:
            raise AssertionError(f"ProtocolError without event/message: {exc!r}") from None
        return
    if isinstance(event, client_events.InputChunk) and len(event.audio) % 2:
        raise AssertionError("odd-length PCM16 chunk accepted")


_state = TwilioStreamState()


def twilio_one_input(data: bytes) -> None:
    global _state
    try:
        event = parse_inbound(data)
    except TwilioProtocolError:
        return
    try:
        _state.receive(event)
    except TwilioProtocolError:
        _state = TwilioStreamState()  # a real stream would end here; start a new one


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--target", choices=["browser", "twilio"], default="browser")
    parser.add_argument("--print-seeds", metavar="DIR")
    args, rest = parser.parse_known_args()
    if args.print_seeds:
        from pathlib import Path

        for i, seed in enumerate(SEEDS if args.target == "browser" else TWILIO_SEEDS):
            Path(args.print_seeds, f"seed-{i}").write_bytes(seed)
        return
    target = browser_one_input if args.target == "browser" else twilio_one_input
    atheris.Setup([sys.argv[0], *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
