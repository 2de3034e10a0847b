"""The ||BREAK|| chunker: split-independent, lossless, bounded."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.pipeline.chunker import MARKER, SemanticChunker, normalise


def run(deltas: list[str], max_chars: int = 200, min_chars: int = 30) -> list[str]:
    chunker = SemanticChunker(max_chars=max_chars, min_chars=min_chars)
    chunks: list[str] = []
    for delta in deltas:
        chunks.extend(chunker.feed(delta))
    return chunks + chunker.flush()


def no_space(text: str) -> str:
    return "".join(text.split())


PIECES = st.sampled_from(
    [
        MARKER, "||BR", "EAK||", "|", "||", "BREAK", " ", "  ", "\n", "\t", ".", "!", "?", ",",
        '."', "...", "e.g.", "i.e.", "Dr.", "3.5", "J.", "—", "word", "Hello", "sentence",
        "a", "supercalifragilistic", "…", "é", "ok?",
    ]
)  # fmt: skip
TEXTS = st.one_of(
    st.lists(PIECES, max_size=60).map("".join),
    st.text(alphabet=st.sampled_from(list("ab .!?|BREAK,\n")), max_size=300),
    st.text(max_size=200),
)


@st.composite
def split_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(TEXTS)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


SIZES = st.tuples(st.integers(1, 80), st.integers(0, 80)).map(lambda t: (t[0], min(t[0], t[1])))


@settings(max_examples=400, deadline=None)
@given(split_text(), SIZES)
def test_invariants_hold_for_any_split(case: tuple[str, list[str]], sizes: tuple[int, int]) -> None:
    text, deltas = case
    max_chars, min_chars = sizes
    chunks = run(deltas, max_chars, min_chars)
    # Independent of how the text was split into deltas.
    assert chunks == run([text], max_chars, min_chars)
    # Well-formed: non-empty, stripped and normalised, bounded, marker-free.
    for chunk in chunks:
        assert chunk and chunk == normalise(chunk)
        assert len(chunk) <= max_chars
        assert MARKER not in chunk
    # Nothing lost, duplicated or reordered.
    spoken = text.replace(MARKER, " ")
    assert no_space("".join(chunks)) == no_space(spoken)
    # Cuts fall on whitespace unless a single word is longer than max_chars.
    if all(len(word) <= max_chars for word in spoken.split()):
        assert " ".join(chunks) == normalise(spoken)


def test_marker_split_across_deltas() -> None:
    chunker = SemanticChunker()
    assert chunker.feed("Hi there. ||BR") == []
    assert chunker.feed("EAK|| How") == ["Hi there."]
    assert chunker.feed(" are you?||") == []
    assert chunker.feed("BREAK||") == ["How are you?"]
    assert chunker.flush() == []


def test_partial_marker_at_end_is_plain_text() -> None:
    assert run(["Pipes ||BRE"]) == ["Pipes ||BRE"]


def test_empty_chunks_are_never_emitted() -> None:
    assert run([f"{MARKER}{MARKER}  \n {MARKER}", " "]) == []


def test_sentence_fallback_once_chunk_is_long_enough() -> None:
    text = "Okay. The weather in Paris is mild today. Bring a light coat! Is that all? Bye."
    assert run([text], min_chars=30) == [
        "Okay. The weather in Paris is mild today.",
        "Bring a light coat! Is that all?",
        "Bye.",
    ]


def test_sentence_emitted_before_the_answer_ends() -> None:
    chunker = SemanticChunker(min_chars=10)
    assert chunker.feed("That is a good question.") == []  # the next char decides
    assert chunker.feed(" Let") == ["That is a good question."]


def test_abbreviations_and_decimals_do_not_end_sentences() -> None:
    text = "It costs 3.5 dollars, e.g. cheap for Dr. Smith and J. Doe. Then more."
    assert run([text], min_chars=5) == [
        "It costs 3.5 dollars, e.g. cheap for Dr. Smith and J. Doe.",
        "Then more.",
    ]


def test_hard_split_on_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    chunks = run([words], max_chars=50)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert " ".join(chunks) == words
    assert all(not chunk.startswith(" ") for chunk in chunks)


def test_hard_split_prefers_late_clause_end() -> None:
    text = "one two three four five six seven, eight nine ten eleven twelve thirteen"
    assert run([text], max_chars=50)[0] == "one two three four five six seven,"


def test_unbroken_run_is_cut_mid_word() -> None:
    assert run(["x" * 25], max_chars=10, min_chars=0) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize(("max_chars", "min_chars"), [(0, 0), (10, 11), (10, -1)])
def test_rejects_bad_sizes(max_chars: int, min_chars: int) -> None:
    with pytest.raises(ValueError):
        SemanticChunker(max_chars=max_chars, min_chars=min_chars)
