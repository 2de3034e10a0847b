"""Command line: ``vantum serve``, ``call FILE.wav``, ``say``, ``token``, ``dial``, ``bench``,
``fakes``."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from .config import Config
from .errors import ConfigError, VantumError
from .logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["bench"]:
        return _bench(args_list[1:])
    parser = argparse.ArgumentParser(prog="vantum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the voice server")
    p_serve.add_argument("--host", help="bind address (env VANTUM_HOST, default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (env VANTUM_PORT, default 8000)")
    p_serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (env VANTUM_WORKERS; default: one per usable "
        "core when every stage is on a cloud provider, else 1; docs/deploy.md)",
    )
    p_serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (env VANTUM_LOG_LEVEL)")
    p_serve.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (env VANTUM_LOG_FORMAT)"
    )
    p_serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="development only: /ws accepts calls without a token (env VANTUM_INSECURE_NO_AUTH=1)",
    )
    p_serve.add_argument(
        "--agents",
        metavar="FILE",
        help="agent definitions, TOML (env VANTUM_AGENTS; docs/agents.md); without one the "
        "only agent is 'default' (VANTUM_SYSTEM_PROMPT)",
    )
    p_serve.add_argument(
        "--default-agent",
        metavar="NAME",
        help="agent for calls that name none (env VANTUM_DEFAULT_AGENT; default: the "
        "file's `default`, else its first agent)",
    )
    p_serve.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help="browser origin allowed on /ws, repeatable (env VANTUM_ALLOWED_ORIGINS, "
        "comma-separated; default: the server's own origin)",
    )

    p_call = sub.add_parser("call", help="talk to a server with a WAV file")
    p_call.add_argument("wav", type=Path, help="16-bit PCM WAV to speak (any rate 8-48 kHz)")
    p_call.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    p_call.add_argument("--fast", action="store_true", help="send audio as fast as possible")
    p_call.add_argument("--out", type=Path, default=Path("answer.wav"), help="answer WAV path")
    p_call.add_argument("--turns", type=int, default=1, help="speak the file this many times")
    p_call.add_argument("--json", action="store_true", help="print the results as JSON")
    p_call.add_argument(
        "--token",
        help="/ws token (default: minted from VANTUM_AUTH_SECRET or the local secret file)",
    )

    p_say = sub.add_parser("say", help="synthesise TEXT to a WAV with the embedded TTS")
    p_say.add_argument("text")
    p_say.add_argument("wav", type=Path)
    p_say.add_argument("--rate", type=int, default=16_000, help="output sample rate")

    p_tok = sub.add_parser(
        "token",
        help="mint a short-lived /ws token (VANTUM_AUTH_SECRET, else the local secret file)",
    )
    p_tok.add_argument("--subject", default="cli", help="who the token is for (in logs)")
    p_tok.add_argument(
        "--ttl",
        type=parse_duration,
        default=300,
        help="lifetime: seconds, or a number with s, m, h, d or w (e.g. 30d for a "
        "frontend's VITE_WS_URL); at most VANTUM_TOKEN_MAX_TTL_S (default 14400 s); "
        "default 300",
    )
    p_tok.add_argument(
        "--audience",
        default="ws",
        help="what the token opens: ws (the /ws endpoint, default); other names are for "
        "services sharing the secret and open nothing on this server",
    )

    p_tok.add_argument(
        "--agent", metavar="NAME", help="bind the call to this agent (docs/agents.md)"
    )
    p_tok.add_argument(
        "--var",
        action="append",
        type=_variable,
        default=[],
        metavar="NAME=VALUE",
        help="a template variable for the agent, repeatable",
    )

    p_dial = sub.add_parser(
        "dial",
        help="place an outbound call through Twilio that a running server answers "
        "(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, VANTUM_PUBLIC_URL of that server)",
    )
    p_dial.add_argument("--to", required=True, help="E.164 number to call, e.g. +14155550100")
    p_dial.add_argument("--from", dest="from_", required=True, help="your Twilio number (E.164)")
    p_dial.add_argument("--agent", metavar="NAME", help="the agent that talks (docs/agents.md)")
    p_dial.add_argument(
        "--var",
        action="append",
        type=_variable,
        default=[],
        metavar="NAME=VALUE",
        help="a template variable for the agent, repeatable",
    )
    p_dial.add_argument(
        "--no-amd", action="store_true", help="no answering-machine detection (docs/telephony.md)"
    )

    sub.add_parser("bench", help="replay benchmark (docs/benchmarks.md); bench --help")

    p_fakes = sub.add_parser("fakes", help="run the fake Deepgram/OpenAI/Cartesia servers")
    p_fakes.add_argument("--host", default="127.0.0.1")
    p_fakes.add_argument(
        "--llm-script",
        metavar="FILE",
        help="JSON list of {when, tool_calls, then}: the fake OpenAI calls tools on cue",
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .server.main import run_server

            origins = tuple(args.allowed_origin) if args.allowed_origin else None
            config = Config.from_env(
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=args.log_level,
                log_format=args.log_format,
                insecure_no_auth=args.insecure_no_auth,
                allowed_origins=origins,
                agents_file=args.agents,
                default_agent=args.default_agent,
            )
            from .server.app import agent_book

            agent_book(config)  # a bad agents file stops here, before anything starts
            configure_logging(config.log_level, config.log_format)
            trio.run(run_server, config)
            # Everything is closed and flushed. Spare the interpreter's final collection
            # of every object (~0.7 s with the openai package loaded), so a drained server
            # exits within its graceful timeout; atexit handlers still run.
            gc.freeze()
        elif args.command == "call":
            from .call import run_call
            from .testing.browser_client import ServerRefused

            token = args.token or _local_token("call", "ws", 300, required=False)
            try:
                return trio.run(
                    run_call, args.wav, args.url, args.fast, args.out, args.turns, args.json, token
                )
            except ServerRefused as exc:
                print(f"vantum call: refused: {exc}", file=sys.stderr)
                return 2
        elif args.command == "say":
            _say(args.text, args.wav, args.rate)
        elif args.command == "token":
            variables = dict(args.var)
            print(
                _local_token(
                    args.subject,
                    args.audience,
                    args.ttl,
                    required=True,
                    agent=args.agent,
                    variables=variables,
                )
            )
        elif args.command == "dial":
            from .dial import run_dial

            config = Config.from_env()
            print(
                trio.run(
                    run_dial,
                    config,
                    args.to,
                    args.from_,
                    args.agent,
                    dict(args.var),
                    not args.no_amd,
                )
            )
        elif args.command == "fakes":
            from .testing.fakes_main import run_fakes
            from .testing.llm_script import ScriptError, load_llm_script

            try:
                script = load_llm_script(args.llm_script) if args.llm_script else ()
            except ScriptError as exc:
                print(f"vantum fakes: {exc}", file=sys.stderr)
                return 2
            configure_logging("INFO", "text")
            trio.run(run_fakes, args.host, script)
    except VantumError as exc:
        print(f"vantum: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _bench(argv: list[str]) -> int:
    """``vantum bench``: run the replay benchmark of the source checkout.

    The harness (``benchmarks/replay_harness.py``) is a development tool that wants
    its fixtures, the Pipecat peer and ``results/`` beside it, so it is not part of
    the installed package: this finds it next to the ``vantum`` being run (an
    editable install) or under the current directory, and imports it only then.
    """
    import importlib

    for folder in (Path(__file__).resolve().parents[1] / "benchmarks", Path.cwd() / "benchmarks"):
        if (folder / "replay_harness.py").is_file():
            sys.path.insert(0, str(folder))
            bench_main: Callable[[list[str]], int] = importlib.import_module("replay_harness").main
            return bench_main(argv)
    print(
        "vantum bench: needs a source checkout (benchmarks/replay_harness.py is not next to "
        "this vantum package nor under the current directory); clone the repository and "
        "run it from there, or use `python benchmarks/replay.py`",
        file=sys.stderr,
    )
    return 2


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(text: str) -> int:
    """Seconds in ``300``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` (argparse type)."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    if not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a positive whole number of seconds, "
            "or one with s, m, h, d or w (e.g. 30d)"
        )
    return int(number) * (unit or 1)


def _variable(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (argparse type for ``--var``)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE with a plain NAME")
    return name, value


def _local_token(
    subject: str,
    audience: str,
    ttl_s: int,
    *,
    required: bool,
    agent: str | None = None,
    variables: dict[str, str] | None = None,
) -> str | None:
    """A token signed with the secret a ``vantum serve`` on this machine uses.

    Its lifetime must fit ``VANTUM_TOKEN_MAX_TTL_S`` (read from the same environment as
    the server's): a longer token would only be refused on connect.
    """
    import time

    from .server import local_secret
    from .server.auth import issue_token, load_secret

    config = Config.from_env()
    if ttl_s > config.token_max_ttl_s:
        raise ConfigError(
            f"--ttl {ttl_s} exceeds the maximum token lifetime of {config.token_max_ttl_s} s "
            "(VANTUM_TOKEN_MAX_TTL_S); servers refuse longer tokens"
        )
    secret = local_secret.resolve(config.auth_secret, config.auth_secret_file, create=False)
    if secret is None:
        if required:
            raise ConfigError(
                "no secret: set VANTUM_AUTH_SECRET, or run `vantum serve` once to create "
                f"{config.auth_secret_file}"
            )
        return None
    try:
        return issue_token(
            load_secret(secret),
            subject=subject,
            audience=audience,
            ttl_s=ttl_s,
            now=time.time(),
            max_ttl_s=config.token_max_ttl_s,
            agent=agent,
            variables=variables or None,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _say(text: str, wav: Path, rate: int) -> None:
    """Make a test utterance on a machine with no microphone (and no network).

    The voice is the embedded one the server would use: hibari when
    ``vantum[embedded]`` is installed, eSpeak NG otherwise.
    """
    from .audio.resample import StreamResampler
    from .audio.wav import write_wav
    from .providers.hibari_tts import hibari_available

    if hibari_available():
        from .providers import hibari_tts

        native, source = hibari_tts.synthesize_blocking(text), hibari_tts.SAMPLE_RATE
    else:
        from .providers.local_tts import EspeakTTS, synthesize_blocking

        native, source = synthesize_blocking(text).pcm, EspeakTTS().sample_rate
    resampler = StreamResampler(source, rate)
    pcm = resampler.process(native) + resampler.flush()
    # A little silence either side, as a person would leave.
    pad = bytes(2 * rate // 4)
    write_wav(wav, pad + pcm + pad, rate)
    print(f"wrote {wav}: {len(pcm) / 2 / rate:.2f} s at {rate} Hz")


if __name__ == "__main__":
    sys.exit(main())
