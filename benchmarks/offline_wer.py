"""Word error rate of the offline recognisers on 20 phone sentences (issue 17).

Two voices (eSpeak NG and hibari), two channels (clean 16 kHz; telephone band:
8 kHz G.711 mu-law with a -45 dBFS noise floor, back to 16 kHz), two recognisers
(Whisper tiny.en through faster-whisper; PocketSphinx). Also CPU per utterance
(process CPU time of the decode: all its threads) and the process RSS with the models loaded.

    .venv/bin/python benchmarks/offline_wer.py [--json benchmarks/results/offline_wer.json]

Nothing downloads: the models are in the installed wheels (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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


def voices() -> dict[str, Callable[[str], np.ndarray]]:
    def espeak(text: str) -> np.ndarray:
        speech = local_tts.synthesize_blocking(text)
        return resample(from_pcm(speech.pcm), local_tts.EspeakTTS().sample_rate, RATE)

    def hibari(text: str) -> np.ndarray:
        return resample(
            from_pcm(hibari_tts.synthesize_blocking(text)), hibari_tts.SAMPLE_RATE, RATE
        )

    return {"espeak": espeak, "hibari": hibari}


def telephone(x: np.ndarray, seed: int) -> np.ndarray:
    """16 kHz -> 8 kHz mu-law with a noise floor -> 16 kHz, like a phone call."""
    narrow = resample(x, RATE, 8_000)
    narrow = narrow + np.random.default_rng(seed).normal(0, 10 ** (-45 / 20), len(narrow))
    coded = from_pcm(mulaw.decode(mulaw.encode(to_pcm(narrow.astype(np.float32)))))
    return resample(coded, 8_000, RATE)


def pad(x: np.ndarray) -> bytes:
    quiet = np.random.default_rng(1).normal(0, 3e-4, RATE // 2).astype(np.float32)
    return to_pcm(np.concatenate([quiet, x, quiet, quiet]))


def whisper(pcm: bytes) -> str:
    """What the actor decodes: the segmenter's utterance, cut ``pause_ms`` after its
    last speech (the pause decode that becomes the final)."""
    seg = Segmenter(interim_every_ms=None)
    cut = [e for e in seg.feed(pcm) if isinstance(e, Utterance)] + [seg.close()]
    utt = next(u for u in cut if u is not None)
    return shared_whisper().decode(decoded_part(utt, seg.pause_ms)).text


_DECODER: list[object] = []


def pocketsphinx(pcm: bytes) -> str:
    # One decoder for all utterances, as in a session: a fresh one recognises its first
    # utterance worst (its cepstral normalisation has not adapted yet).
    if not _DECODER:
        _DECODER.append(load_decoder(dither=False))
    rec = Recognizer(_DECODER[0])
    events = rec.feed(pcm) + rec.finalize()  # the endpoint may come within feed
    return " ".join(getattr(e, "text", "") for e in events)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--only", choices=("whisper", "pocketsphinx"), help="one recogniser (PocketSphinx is slow)"
    )
    args = ap.parse_args()
    import psutil

    proc = psutil.Process()
    shared_whisper().load()
    rss_whisper = proc.memory_info().rss
    results: dict[str, object] = {}
    for vname, speak in voices().items():
        clips = [speak(s) for s in SENTENCES]
        for channel in ("clean", "telephone"):
            audio = [pad(c if channel == "clean" else telephone(c, i)) for i, c in enumerate(clips)]
            for rname, recognise in (("whisper", whisper), ("pocketsphinx", pocketsphinx)):
                if args.only not in (None, rname):
                    continue
                errors = words = 0
                cpu: list[float] = []
                for ref, pcm in zip(SENTENCES, audio, strict=True):
                    t0 = time.process_time()
                    hyp = recognise(pcm)
                    cpu.append(time.process_time() - t0)
                    errors += edit_distance(norm(ref), norm(hyp))
                    words += len(norm(ref))
                key = f"{rname}/{vname}/{channel}"
                results[key] = {
                    "wer": round(errors / words, 3),
                    "errors": errors,
                    "words": words,
                    "cpu_s_median": round(statistics.median(cpu), 3),
                }
                print(
                    f"{key:32s} WER {errors / words:.3f} ({errors}/{words})  "
                    f"CPU/utt median {statistics.median(cpu):.3f} s",
                    flush=True,
                )
    results["rss_mb_with_whisper"] = round(rss_whisper / 2**20, 1)
    results["rss_mb_end"] = round(proc.memory_info().rss / 2**20, 1)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
