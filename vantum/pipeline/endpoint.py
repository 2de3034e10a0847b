"""Does a transcript stop mid-phrase? The word half of the semantic end of turn.

Smart Turn (``vantum/audio/smart_turn.py``) hears intonation, so a fragment read
with a falling tone ("I'd like to book a table for.") sounds finished to it. A
turn whose transcript ends in a word that cannot end a phrase — an article, a
preposition, a conjunction, a possessive, a filler — is not ended early, whatever
the model says; the configured silence still ends it (issue 23 measured model
*and* words right 80 % of the time against 47-50 % for the model alone).

The tables are deliberately short: a word that often ends a complete sentence
("in" in "come in", "that", "so", "about") is not listed, since listing it would
only make the bot wait the full silence. Pure: no I/O.
"""

from __future__ import annotations


def _words(*groups: str) -> frozenset[str]:
    return frozenset(word for group in groups for word in group.split())


INCOMPLETE_ENDINGS: dict[str, frozenset[str]] = {
    "en": _words(
        # articles, possessive and other determiners
        "a an the my your our their its every each some any no",
        # prepositions that take an object
        "for to of with from at into onto than via per between towards",
        # conjunctions that open a clause
        "and or but nor because although though unless whereas whether if",
        # subject pronouns and contractions that need a verb
        "i i'm i'd i'll i've we're we'd you're they're",
        "gonna wanna gotta",
        # fillers
        "um uh erm er uhm hmm",
    ),
    "de": _words(
        "der die das den dem des ein eine einen einem einer mein meine dein unser",
        "für zu von mit aus bei nach und oder aber weil dass wenn ob ich äh ähm",
    ),
    "es": _words(
        "el la los las un una unos unas mi mis tu su sus para por de del con a al",
        "y o pero porque que si eh este",
    ),
    "fr": _words(
        "le la les un une des mon ma mes ton ta son sa pour de du avec à au aux",
        "et ou mais parce que si je euh",
    ),
}
"""Per language (the primary subtag of the call's BCP-47 tag), words after which
a phrase is not over. English first; add a language by adding a set."""


def last_word(text: str) -> str:
    """The transcript's last word, lower-cased, without the punctuation around it
    (apostrophes inside a word are kept: "I'm")."""
    for token in reversed(text.split()):
        word = token.strip('.,;:!?"“”‘()[]…-—–').strip("'’").lower().replace("’", "'")
        if word:
            return word
    return ""


def ends_incomplete(text: str, language: str) -> bool:
    """Whether ``text`` stops on a word that cannot end a phrase in ``language``.
    Empty text is incomplete (nothing to judge yet); a language with no table only
    has its empty text judged incomplete."""
    word = last_word(text)
    if not word:
        return True
    table = INCOMPLETE_ENDINGS.get(language.split("-", 1)[0].lower(), frozenset())
    return word in table


__all__ = ["INCOMPLETE_ENDINGS", "ends_incomplete", "last_word"]
