"""The history after a barge-in never claims text the caller did not hear.

For any answer (LLM text in chunks), any TTS speed, any amount of synthesised audio,
any subset of word timestamps received and any barge-in instant, the heard text is
a prefix of what the LLM wrote whose duration, as the TTS spoke it, exceeds the
audio played by at most one word.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline.heard import heard_text

words = st.text(alphabet="abcdefghij,.", min_size=1, max_size=10)
chunks = st.lists(st.lists(words, min_size=1, max_size=8), min_size=1, max_size=5)


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[str], float, int, float, int, float]:
    """(words the LLM wrote, seconds a character takes the TTS, words synthesised,
    extra audio into the next word, words timestamped so far, barge-in fraction)."""
    text = [w for chunk in draw(chunks) for w in chunk]
    per_char = draw(st.floats(0.05, 0.1))
    synthesised = draw(st.integers(0, len(text)))
    partial = draw(st.floats(0, 1)) if synthesised < len(text) else 0.0
    stamped = draw(st.integers(0, synthesised))
    cut = draw(st.floats(0, 1))
    return text, per_char, synthesised, partial, stamped, cut


@given(answers())
def test_heard_text_is_a_prefix_never_ahead_of_the_audio(
    case: tuple[list[str], float, int, float, int, float],
) -> None:
    text, per_char, synthesised, partial, stamped, cut = case
    ends = []
    t = 0.0
    for w in text:
        t += (len(w) + 1) * per_char
        ends.append(t)
    audio = (ends[synthesised - 1] if synthesised else 0.0) + (
        partial * (len(text[synthesised]) + 1) * per_char if synthesised < len(text) else 0.0
    )
    stamps = [(w, e - (len(w) + 1) * per_char, e) for w, e in zip(text, ends, strict=True)]
    heard = cut * audio
    got = heard_text(
        " ".join(text),
        heard,
        stamps[:stamped],
        audio_seconds=audio,
        synthesis_done=synthesised == len(text),
    ).split()
    assert got == text[: len(got)]
    if got:
        one_word = max((len(w) + 1) * per_char for w in text)
        assert ends[len(got) - 1] <= heard + one_word + 1e-9


def test_a_cut_in_the_first_sentence_claims_none_of_the_next() -> None:
    """Issue 20's case: 0.76 s of audio played, the LLM had written two and a half
    sentences, no timestamp had arrived; the old fallback spread all of them over the
    audio sent and put 6.3 s of speech into the history."""
    text = "Sure, I can help with that. Which city are you in? And for which day do"
    got = heard_text(text, 0.76, [], audio_seconds=0.96, synthesis_done=False)
    assert text.startswith(got) and len(got) <= 0.76 / 0.1
