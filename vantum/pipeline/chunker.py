"""Cut a streamed LLM answer into speakable chunks (sans-I/O).

The TTS should start speaking as soon as a phrase is complete, not when the whole
answer is in. The system prompt asks the model to put ``||BREAK||`` between
speakable chunks; models forget, so the chunker also cuts at sentence ends once a
chunk is long enough, and never lets a chunk grow past ``max_chars``.

Contract (property-tested), with ``normalise(s) = " ".join(s.split())``:

* every cut depends only on the text, never on how it was split into deltas:
  ``feed``-ing any split and then ``flush``-ing yields the same chunks;
* ``" ".join(chunks) == normalise(text.replace(MARKER, " "))`` whenever no
  whitespace-free run is longer than ``max_chars`` (such a run is cut mid-word, so
  then only the non-whitespace characters are guaranteed to match, in order);
* chunks are non-empty, stripped, internally normalised, at most ``max_chars``.

To be split-independent a cut is made only once the text that decides it is
known: a sentence end needs the character after it (``3.5`` is not a sentence
end, ``3. Then`` is), and a trailing ``||BR`` is held back until it is known
whether the marker completes.
"""

from __future__ import annotations

import re

MARKER = "||BREAK||"

_WS = re.compile(r"\s+")
_CLOSERS = "\"')]}»”’"
_SENTENCE_END = ".!?…"
_CLAUSE_END = ",;:—"
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.){2,}$")  # e.g. i.e. U.S. a.m.
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "no.", "approx.", "fig."}
)


def normalise(text: str) -> str:
    """Collapse whitespace runs to one space and strip the ends."""
    return " ".join(text.split())


class SemanticChunker:
    """Feed text deltas, get speakable chunks back; ``flush`` at the end of the answer."""

    def __init__(self, max_chars: int = 200, min_chars: int = 30) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        if not 0 <= min_chars <= max_chars:
            raise ValueError("min_chars must be between 0 and max_chars")
        self.max_chars = max_chars
        self.min_chars = min_chars
        self._held = ""  # raw text that may be the start of a marker
        self._pending = ""  # whitespace-normalised text since the last cut (no leading space)

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the chunks it completed (often none)."""
        chunks: list[str] = []
        raw = self._held + delta
        while (index := raw.find(MARKER)) >= 0:
            self._append(raw[:index])
            chunks.extend(self._cut(complete=True))
            raw = raw[index + len(MARKER) :]
        keep = _marker_prefix_length(raw)
        self._held = raw[len(raw) - keep :] if keep else ""
        self._append(raw[: len(raw) - keep])
        chunks.extend(self._cut(complete=False))
        return chunks

    def flush(self) -> list[str]:
        """End of the answer: return whatever is left (a partial marker is plain text)."""
        self._append(self._held)
        self._held = ""
        return self._cut(complete=True)

    def _append(self, text: str) -> None:
        if text:
            self._pending = _WS.sub(" ", self._pending + text).lstrip()

    def _cut(self, *, complete: bool) -> list[str]:
        chunks: list[str] = []
        while (cut := self._next_cut(complete)) is not None:
            chunk = self._pending[:cut].strip()
            self._pending = self._pending[cut:].lstrip()
            if chunk:
                chunks.append(chunk)
        return chunks

    def _next_cut(self, complete: bool) -> int | None:
        """Where the next chunk ends in ``_pending``, or None while undecidable."""
        text = self._pending
        if not text:
            return None
        window = text[: self.max_chars + 1]
        for end in _sentence_ends(window):
            if self.min_chars <= end <= self.max_chars:
                return end
        if len(text) > self.max_chars:
            return _hard_cut(window, self.max_chars)
        return len(text) if complete else None


def _sentence_ends(text: str) -> list[int]:
    """Ends (exclusive) of sentences in ``text`` that are followed by a space."""
    ends: list[int] = []
    for i, ch in enumerate(text):
        if ch not in _SENTENCE_END:
            continue
        end = i + 1
        while end < len(text) and text[end] in _CLOSERS:
            end += 1
        if end < len(text) and text[end] == " " and not _is_abbreviation(text, i):
            ends.append(end)
    return ends


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the '.' at ``dot`` most likely does not end a sentence."""
    if text[dot] != ".":
        return False
    word = text[text.rfind(" ", 0, dot) + 1 : dot + 1].lstrip("\"'([{«“‘")
    if len(word) == 2 and word[0].isupper():  # an initial: "J. R. R. Tolkien"
        return True
    return word.lower() in _ABBREVIATIONS or _INITIALISM.match(word) is not None


def _hard_cut(window: str, max_chars: int) -> int:
    """Best cut at most ``max_chars`` in: late sentence end, late clause end, space, mid-word.

    "Late" means in the second half of the window, so a forced cut does not leave
    a stub like "Well," on its own.
    """
    floor = max(1, max_chars // 2)
    sentence = [end for end in _sentence_ends(window) if floor <= end <= max_chars]
    if sentence:
        return sentence[-1]
    for i in range(max_chars - 1, floor - 2, -1):
        if window[i] in _CLAUSE_END and window[i + 1] == " ":
            return i + 1
    space = window.rfind(" ", 1, max_chars + 1)
    return space if space > 0 else max_chars


def _marker_prefix_length(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of MARKER."""
    for length in range(min(len(text), len(MARKER) - 1), 0, -1):
        if MARKER.startswith(text[-length:]):
            return length
    return 0
