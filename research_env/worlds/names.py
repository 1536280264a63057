"""Pronounceable made-up names built from a fixed syllable inventory, so that no answer can be known
from pre-training or memorised across splits, and a tokenizer can split any unseen name into known pieces.

A syllable is one onset consonant, one vowel and an optional coda consonant. Because every syllable starts
with a consonant, a name splits into its syllables in exactly one way (:func:`split_syllables`).
"""

from __future__ import annotations

import re

import numpy as np

# A small inventory (200 syllables): each syllable token recurs often in training text, which is what lets a
# small policy learn to copy names it has never seen (with 490 syllables a 0.6M-parameter model did not).
ONSETS = "bdgklmnrst"
VOWELS = "aeiou"
CODAS = ("", "n", "r", "s")
SYLLABLES: tuple[str, ...] = tuple(o + v + c for o in ONSETS for v in VOWELS for c in CODAS)
_SYLLABLE = re.compile(f"[{ONSETS}][{VOWELS}](?:[{''.join(CODAS)}](?![{VOWELS}]))?")
_NAME_WORD = re.compile(f"^(?:{_SYLLABLE.pattern})+$")


def split_syllables(word: str) -> list[str] | None:
    """The syllables of a generated name word (case kept), or None when ``word`` is not built from them."""
    if not _NAME_WORD.match(word.lower()):
        return None
    pieces, start = [], 0
    for match in _SYLLABLE.finditer(word.lower()):
        pieces.append(word[start : match.end()])
        start = match.end()
    return pieces


_CAPITALISED_WORD = re.compile(r"\b[A-Z][a-z]+\b")


def spell_out_names(text: str) -> str:
    """``text`` with every capitalised name word written as its syllables joined by hyphens ("Bartes" becomes
    "Bar-tes"). A byte-level BPE trained on such text learns syllables (a hyphen is a pre-token of its own, and
    unlike a space it leaves the next syllable without a word-start marker), not whole training names, so a
    held-out name is encoded as a sequence of known syllable tokens instead of unfamiliar byte pieces."""
    return _CAPITALISED_WORD.sub(lambda m: "-".join(split_syllables(m.group()) or [m.group()]), text)


class NameSource:
    """Draws unique capitalised name words of two (mostly) or three syllables from a seeded generator.

    Words listed in ``reserved`` (the passage and question templates' own words) are never drawn, so a
    name cannot be mistaken for template text by BM25 or by the answer normaliser.
    """

    def __init__(self, rng: np.random.Generator, reserved: set[str] = frozenset(), three_syllable_p: float = 0.25):
        self.rng, self.three_syllable_p = rng, three_syllable_p
        self.used: set[str] = {w.lower() for w in reserved}

    def words(self, n: int) -> list[str]:
        """``n`` new distinct words, none of them drawn before by this source."""
        out: list[str] = []
        while len(out) < n:
            need = int((n - len(out)) * 1.2) + 8
            lengths = np.where(self.rng.random(need) < self.three_syllable_p, 3, 2)
            picks = self.rng.integers(len(SYLLABLES), size=(need, 3))
            for length, row in zip(lengths.tolist(), picks.tolist(), strict=True):
                word = "".join(SYLLABLES[i] for i in row[:length])
                if word not in self.used:
                    self.used.add(word)
                    out.append(word.capitalize())
                    if len(out) == n:
                        break
        return out

    def near_miss(self, word: str) -> str | None:
        """A new word that differs from ``word`` in its last syllable only (a distractor name), or None."""
        stem = "".join(split_syllables(word)[:-1]).lower()
        for i in self.rng.permutation(len(SYLLABLES))[:20].tolist():
            candidate = stem + SYLLABLES[i]
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate.capitalize()
        return None
