"""What the caller heard of an answer that was cut: the text for the history.

After a barge-in the conversation must hold what the caller heard, not what the
LLM wrote: a history that claims sentences the caller never heard makes the model
talk past them. The answer's text is known; how far into it the caller got is
known only as *audio* (seconds played, by the clock or the carrier's marks), so
text is matched to audio, never claimed ahead of it:

1. **Word timestamps** (Cartesia, eSpeak): a word is heard once the audio up to its
   end has played.
2. Past the last timestamp (none yet, or a TTS without them), text is matched to
   audio only where that audio is known to be the text's own: once the TTS has
   produced the whole answer, the rest of the text is spread over the rest of the
   audio by characters. Before that, a deliberately slow speaking rate
   (:data:`SLOW_SECONDS_PER_CHAR`) bounds it, so audio of the first sentence is
   never spread over text the TTS has not spoken yet (the old fallback spread
   everything the LLM had written over the audio sent, and a barge-in during the
   first sentence put two and a half sentences into the history).
"""

from __future__ import annotations

from collections.abc import Sequence

SLOW_SECONDS_PER_CHAR = 0.1
"""Ten characters a second: slower than the voices we ship or call (Cartesia ~15,
eSpeak at 175 words a minute ~14.5), so the estimate claims less than was heard,
never more."""


def heard_text(
    full_text: str,
    heard: float,
    words: Sequence[tuple[str, float, float]],
    *,
    audio_seconds: float,
    synthesis_done: bool,
) -> str:
    """The prefix of ``full_text`` heard in the first ``heard`` seconds of its audio.

    ``words`` are the TTS word timestamps received so far (word, start, end; in
    order); ``audio_seconds`` is the audio produced for the answer so far, all of it
    when ``synthesis_done``.
    """
    heard = max(0.0, min(heard, audio_seconds))
    stamped = [w for (w, _start, end) in words if end <= heard]
    if len(stamped) < len(words):
        return " ".join(stamped)  # the cut fell inside the timestamped audio
    rest = full_text.split()[len(words) :]
    start = words[-1][2] if words else 0.0
    budget = heard - start
    if not rest or budget <= 0:
        return " ".join(stamped)
    if synthesis_done and audio_seconds > start:
        # The rest of the audio is the rest of the text: spread it by characters.
        per_char = (audio_seconds - start) / max(1, _chars(rest))
    else:
        per_char = SLOW_SECONDS_PER_CHAR
    taken: list[str] = []
    used = 0.0
    for word in rest:
        used += (len(word) + 1) * per_char
        if used > budget + 1e-9:
            break
        taken.append(word)
    return " ".join([*stamped, *taken])


def _chars(words: Sequence[str]) -> int:
    """Characters the words take when spoken one after another (with their spaces)."""
    return sum(len(w) + 1 for w in words)


__all__ = ["SLOW_SECONDS_PER_CHAR", "heard_text"]
