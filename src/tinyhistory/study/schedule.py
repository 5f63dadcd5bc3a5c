"""Which pair a rater sees next: the least-compared pair they have not rated, sides drawn per rater and pair.

A pair is two systems' videos of the same storyboard and seed. Every rater may rate every pair once (so a rater's
total is ``storyboards × seeds × systems·(systems−1)/2``); among the pairs a rater has not rated, the one with the
fewest votes so far (counting pairs on other raters' screens right now) comes first, so comparisons stay balanced
while several people rate at once. Ties between equally-compared pairs, and which video goes left, are drawn from a
hash of the study's secret salt, the rater and the pair: unpredictable for raters, yet the same after a reload or a
server restart, so a rater who comes back sees the same pair the same way round.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass

from tinyhistory.study.votes import Vote


@dataclass(frozen=True)
class Pair:
    storyboard: str
    seed: int
    a: str  # the two systems, in sorted order
    b: str

    @property
    def key(self) -> str:
        return f"{self.storyboard}#{self.seed}#{self.a}#{self.b}"

    @property
    def systems(self) -> tuple[str, str]:
        return self.a, self.b


def all_pairs(systems: list[str], storyboards: list[str], seeds: list[int]) -> list[Pair]:
    """Every pair of distinct systems for every storyboard and seed."""
    return [
        Pair(story, seed, a, b)
        for story in storyboards
        for seed in seeds
        for a, b in itertools.combinations(sorted(systems), 2)
    ]


def _draw(salt: str, *parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join((salt, *parts)).encode()).digest()[:8], "big")


class Scheduler:
    """The scheduling state, rebuilt from the votes on disk at start (not thread-safe: the server holds a lock)."""

    def __init__(self, pairs: list[Pair], salt: str, votes: list[Vote] = ()):
        self.pairs = {p.key: p for p in pairs}
        self.salt = salt
        self.tokens = {self.token(p): p for p in pairs}
        self.counts: Counter[str] = Counter()  # votes per pair key
        self.done: dict[str, set[str]] = {}  # rater -> pair keys rated
        self.showing: dict[str, str] = {}  # rater -> the pair key on their screen (not voted yet)
        for vote in votes:
            if vote.pair in self.pairs:
                self.record(vote)

    @property
    def total(self) -> int:
        """Pairs each rater rates."""
        return len(self.pairs)

    def token(self, pair: Pair) -> str:
        """An opaque id for a pair on the page (the key would tell the systems)."""
        return hashlib.sha256(f"{self.salt}\x00pair\x00{pair.key}".encode()).hexdigest()[:16]

    def sides(self, rater: str, pair: Pair) -> tuple[str, str]:
        """(left system, right system) for this rater and pair: a fair coin, the same every time it is asked."""
        return (pair.a, pair.b) if _draw(self.salt, "side", rater, pair.key) % 2 == 0 else (pair.b, pair.a)

    def has_voted(self, rater: str, pair: Pair) -> bool:
        return pair.key in self.done.get(rater, set())

    def record(self, vote: Vote) -> None:
        self.counts[vote.pair] += 1
        self.done.setdefault(vote.rater, set()).add(vote.pair)
        if self.showing.get(vote.rater) == vote.pair:
            del self.showing[vote.rater]

    def progress(self, rater: str) -> tuple[int, int]:
        """(pairs rated, pairs in all) for ``rater``."""
        return len(self.done.get(rater, set()) & self.pairs.keys()), self.total

    def next_for(self, rater: str) -> Pair | None:
        """The pair ``rater`` should rate now (the one on their screen if they have not voted on it), or None when
        they have rated every pair."""
        current = self.showing.get(rater)
        if current is not None and current not in self.done.get(rater, set()):
            return self.pairs[current]
        done = self.done.get(rater, set())
        open_pairs = [key for key in self.pairs if key not in done]
        if not open_pairs:
            self.showing.pop(rater, None)
            return None
        on_screens = Counter(key for who, key in self.showing.items() if who != rater)
        key = min(open_pairs, key=lambda k: (self.counts[k] + on_screens[k], _draw(self.salt, "order", rater, k)))
        self.showing[rater] = key
        return self.pairs[key]
