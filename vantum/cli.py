"""Command line: ``vantum serve``, ``vantum call FILE.wav``, ``vantum fakes``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import trio

from .config import Config
from .errors import VantumError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vantum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the voice server")
    p_serve.add_argument("--host", help="bind address (env VANTUM_HOST, default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (env VANTUM_PORT, default 8000)")
    p_serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (env VANTUM_LOG_LEVEL)")

    p_call = sub.add_parser("call", help="talk to a server with a WAV file")
    p_call.add_argument("wav", type=Path, help="16-bit PCM WAV to speak (any rate 8-48 kHz)")
    p_call.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    p_call.add_argument("--fast", action="store_true", help="send audio as fast as possible")
    p_call.add_argument("--out", type=Path, default=Path("answer.wav"), help="answer WAV path")
    p_call.add_argument("--turns", type=int, default=1, help="speak the file this many times")
    p_call.add_argument("--json", action="store_true", help="print the results as JSON")

    p_fakes = sub.add_parser("fakes", help="run the fake Deepgram/OpenAI/Cartesia servers")
    p_fakes.add_argument("--host", default="127.0.0.1")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .server.main import run_server

            config = Config.from_env(host=args.host, port=args.port, log_level=args.log_level)
            logging.basicConfig(
                level=config.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            trio.run(run_server, config)
        elif args.command == "call":
            from .call import run_call

            return trio.run(run_call, args.wav, args.url, args.fast, args.out, args.turns, args.json)
        elif args.command == "fakes":
            from .testing.fakes_main import run_fakes

            logging.basicConfig(level="INFO")
            trio.run(run_fakes, args.host)
    except VantumError as exc:
        print(f"vantum: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
