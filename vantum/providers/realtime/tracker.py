"""Which audio of a Realtime response was produced, and where to cut it at a barge-in.

The server generates audio faster than real time, so when the caller interrupts,
its conversation holds audio (and a transcript) the caller never heard. The client
must cut each assistant item back to what was played — and the integrations that
break do so in three ways this module makes impossible by construction:

- a truncation point past the item's audio ("Audio content of X ms is already
  shorter than Y ms"): the point is ``min(heard, produced − 1 ms)``, where
  *produced* is the audio Vantum received for that item, never the wall clock;
- ``audio_end_ms = 0`` ("Only model output audio messages can be truncated"): an
  item nothing of which was heard is *deleted* instead;
- items the caller never reached (a second item of a multi-item response) left in
  the conversation: they are deleted too.

The tracker is fed the server events of one response in arrival order and keeps the
audio as *segments* in that order (the order the player plays them), so it stays
right even if deltas of two items were interleaved. It is pure: no clock, no I/O;
the caller passes how much of the response's audio was heard.
"""

from __future__ import annotations

import attrs

from .codec import (
    PCM_RATE,
    AudioDelta,
    AudioDone,
    ItemDelete,
    ItemTruncate,
    OutputItemAdded,
    ServerEvent,
    TranscriptDelta,
    TranscriptDone,
)


@attrs.define
class AudioItem:
    """One assistant message item of the response and the audio received for it."""

    item_id: str
    content_index: int = 0
    samples: int = 0
    transcript: str = ""
    done: bool = False

    @property
    def produced_ms(self) -> int:
        """Whole milliseconds of audio received (the server's item is at least this)."""
        return self.samples * 1000 // PCM_RATE


Cut = ItemTruncate | ItemDelete


@attrs.frozen
class HeardItem:
    """What the caller heard of one item: the pipeline turns it into text
    (:func:`vantum.pipeline.heard.heard_text`), never the provider's transcript of
    audio that was not played."""

    item_id: str
    transcript: str
    heard_ms: int
    """Audio kept in the conversation (0 for a deleted item)."""
    produced_s: float
    done: bool


@attrs.frozen
class CutPlan:
    """What to send after an interruption, and what the caller heard of the answer."""

    cuts: tuple[Cut, ...]
    heard: tuple[HeardItem, ...]

    @property
    def heard_ms(self) -> dict[str, int]:
        return {h.item_id: h.heard_ms for h in self.heard}


@attrs.define
class ResponseTracker:
    """The audio items of one response, fed its server events in arrival order."""

    response_id: str
    items: dict[str, AudioItem] = attrs.Factory(dict)
    segments: list[tuple[str, int]] = attrs.Factory(list)
    """(item id, samples) in arrival order: the order the caller hears them."""

    @property
    def produced_samples(self) -> int:
        return sum(n for _, n in self.segments)

    def feed(self, event: ServerEvent) -> None:
        """Take one event of this response (others are ignored)."""
        if getattr(event, "response_id", self.response_id) != self.response_id:
            return
        if isinstance(event, OutputItemAdded):
            if event.kind == "message" and not event.done:
                self.add_item(event.item_id)
        elif isinstance(event, AudioDelta):
            self.add_audio(event.item_id, len(event.pcm) // 2, event.content_index)
        elif isinstance(event, TranscriptDelta):
            self.add_text(event.item_id, event.delta)
        elif isinstance(event, TranscriptDone):
            self._item(event.item_id).transcript = event.transcript
        elif isinstance(event, AudioDone):
            self.finish_item(event.item_id)

    def add_item(self, item_id: str) -> None:
        self._item(item_id)

    def add_audio(self, item_id: str, samples: int, content_index: int = 0) -> None:
        item = self._item(item_id)
        item.content_index = content_index
        item.samples += samples
        if samples:
            self.segments.append((item_id, samples))

    def add_text(self, item_id: str, delta: str) -> None:
        self._item(item_id).transcript += delta

    def finish_item(self, item_id: str, transcript: str | None = None) -> None:
        item = self._item(item_id)
        item.done = True
        if transcript is not None:
            item.transcript = transcript

    def _item(self, item_id: str) -> AudioItem:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = AudioItem(item_id)
        return item

    def heard_samples(self, heard_s: float) -> dict[str, int]:
        """Per item, the samples within the first ``heard_s`` seconds of the response."""
        budget = max(0, int(heard_s * PCM_RATE))
        heard = dict.fromkeys(self.items, 0)
        for item_id, samples in self.segments:
            take = min(samples, budget)
            heard[item_id] += take
            budget -= take
        return heard

    def plan_cut(self, heard_s: float) -> CutPlan:
        """Truncate or delete every item the caller did not hear to its end.

        ``heard_s`` is how much of the response's audio (in playing order) the caller
        heard. An item fully heard and complete is left alone; one partly heard is
        truncated at ``min(heard, produced − 1)`` ms (a whole-heard item whose audio
        may still have been coming is cut at its last received millisecond); one
        not heard at all — or of which less than a millisecond would remain — is
        deleted, because a truncation at 0 ms is an error.
        """
        heard = self.heard_samples(heard_s)
        cuts: list[Cut] = []
        kept: list[HeardItem] = []
        for item in self.items.values():
            samples = heard[item.item_id]
            produced_s = item.samples / PCM_RATE
            if item.done and samples >= item.samples and item.samples > 0:
                kept.append(
                    HeardItem(item.item_id, item.transcript, item.produced_ms, produced_s, True)
                )
                continue
            end_ms = min(samples * 1000 // PCM_RATE, item.produced_ms - 1)
            if end_ms <= 0:
                cuts.append(ItemDelete(item.item_id))
                end_ms = 0
            else:
                cuts.append(ItemTruncate(item.item_id, end_ms, item.content_index))
            kept.append(HeardItem(item.item_id, item.transcript, end_ms, produced_s, item.done))
        return CutPlan(tuple(cuts), tuple(kept))

    def full_text(self) -> str:
        return " ".join(i.transcript for i in self.items.values() if i.transcript)


__all__ = ["AudioItem", "Cut", "CutPlan", "HeardItem", "ResponseTracker"]
