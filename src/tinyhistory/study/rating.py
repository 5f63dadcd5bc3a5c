"""Bradley–Terry ratings on the Elo scale with bootstrap intervals, as Chatbot Arena reports them.

Model: P(i beats j) = 1 / (1 + 10^((R_j − R_i) / 400)); a tie (and a "both bad") counts half a win for each side,
as FastChat's ``rating_systems.py`` scores them. The maximum-likelihood strengths come from ``choix``
(:func:`choix.ilsr_pairwise_dense`, iterative Luce spectral ranking, which converges to the ML estimate) on the
matrix of scores ``W[i, j]`` = wins of i over j + ½·ties, so half wins and bootstrap weights need no duplicated
data. Ratings are ``1000 + 400/ln(10) · (θ − mean θ)``: anchored so that the mean rating is 1000 (the mean over
the systems with a finite rating, see below).

The ML estimate does not exist in two cases, and each is handled explicitly:

* a system with no wins and no ties (or no losses and no ties): its ML rating is −∞ (+∞). choix's ``alpha``
  (:data:`ALPHA`, added to every transition rate of its Markov chain: about ``α·(π_i + π_j)`` virtual wins each
  way between every two systems, far below one vote) keeps it finite, very low (high) and below (above) everything
  it lost to. That value is arbitrary, so it is left out of the anchor's mean (it would shift every other rating),
  and the report gives such a system no number and no interval (every resample has no win either), only its place;
* a comparison graph in several pieces (some systems never compared, even indirectly, with others): ratings are
  comparable only within a piece; each piece is anchored at mean 1000 on its own and the report names the pieces.

Intervals: percentile bootstrap over votes (each round draws as many votes as there are, with replacement, and
refits; FastChat's multinomial resampling of the distinct outcomes, which is the same distribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ELO_SCALE = 400.0
ELO_ANCHOR = 1000.0
ALPHA = 1e-4  # choix's regularisation: a transition rate added between every two systems (see the module doc)
NATURAL_TO_ELO = ELO_SCALE / math.log(10.0)  # θ in natural log-odds units → Elo points


@dataclass
class Ratings:
    """Elo ratings of ``systems`` (NaN for a system without votes) with percentile bootstrap intervals."""

    systems: list[str]
    rating: np.ndarray  # (S,) Elo
    lower: np.ndarray  # (S,) the interval's lower end (Elo)
    upper: np.ndarray  # (S,)
    rounds: int
    level: float
    seed: int
    components: list[list[str]]  # the comparison graph's pieces (systems with votes)
    no_wins: list[str] = field(default_factory=list)  # ML rating −∞: no win, no tie
    no_losses: list[str] = field(default_factory=list)  # ML rating +∞: no loss, no tie
    unrated: list[str] = field(default_factory=list)  # no votes at all
    split_rounds: int = 0  # bootstrap rounds whose comparison graph fell into more pieces than the data's
    bootstrap: np.ndarray | None = None  # (rounds, S) Elo per round

    def as_dict(self) -> dict:
        out = {}
        for k, name in enumerate(self.systems):
            rated = name not in self.unrated
            infinite = name in self.no_wins or name in self.no_losses
            out[name] = {
                # an infinite ML rating: the number is where the regularisation holds it (it orders, nothing more)
                "rating": float(self.rating[k]) if rated else None,
                "unbounded": "below" if name in self.no_wins else "above" if name in self.no_losses else None,
                "lower": None if not rated or infinite else float(self.lower[k]),
                "upper": None if not rated or infinite else float(self.upper[k]),
                "component": next((c for c, part in enumerate(self.components) if name in part), None),
            }
        return out


def score_matrix(n: int, first: np.ndarray, second: np.ndarray, score: np.ndarray, weight=None) -> np.ndarray:
    """``W`` (n, n): ``W[i, j]`` = how much i beat j (wins + ½ ties), from outcomes (first, second, first's score
    in {0, ½, 1}) with optional weights (bootstrap counts)."""
    weight = np.ones(len(first)) if weight is None else np.asarray(weight, dtype=float)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (first, second), weight * score)
    np.add.at(matrix, (second, first), weight * (1.0 - score))
    return matrix


def fit_strengths(matrix: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Bradley–Terry log-strengths θ (n,) in natural units from a score matrix, via choix's I-LSR."""
    import choix

    if len(matrix) == 1:
        return np.zeros(1)
    try:
        return np.asarray(choix.ilsr_pairwise_dense(matrix, alpha=alpha, max_iter=10_000, tol=1e-9))
    except RuntimeError as exc:  # choix: "Did not converge after N iterations"
        raise ValueError(f"the Bradley–Terry fit did not converge ({exc})") from None


def graph_components(matrix: np.ndarray) -> list[list[int]]:
    """The comparison graph's connected pieces (systems joined by at least one vote), each sorted (a plain graph
    walk: a study has a handful of systems, and this runs once per bootstrap round)."""
    linked = (matrix + matrix.T) > 0
    unseen = set(range(len(matrix)))
    parts = []
    while unseen:
        stack = [min(unseen)]
        part = set(stack)
        while stack:
            for j in np.flatnonzero(linked[stack.pop()]).tolist():
                if j not in part:
                    part.add(j)
                    stack.append(j)
        unseen -= part
        parts.append(sorted(part))
    return parts


def unbounded(matrix: np.ndarray) -> np.ndarray:
    """(n,) bool: systems whose ML rating is infinite (no wins and no ties, or no losses and no ties)."""
    score = matrix.sum(axis=1)
    games = (matrix + matrix.T).sum(axis=1)
    return (games > 0) & ((score == 0) | (score == games))


def to_elo(theta: np.ndarray, components: list[list[int]], infinite: np.ndarray | None = None) -> np.ndarray:
    """Elo ratings (n,) from log-strengths (n,): each piece of the comparison graph anchored so that the mean over its
    systems with a finite ML rating (``infinite`` marks the others; all of them if none is finite) is
    ``ELO_ANCHOR``: a system without wins, held at some very low value by the regularisation, must not drag the
    anchor (and with it every other rating) down."""
    elo = np.empty_like(theta, dtype=float)
    infinite = np.zeros(len(theta), bool) if infinite is None else infinite
    for part in components:
        anchor = [k for k in part if not infinite[k]] or part
        elo[part] = ELO_ANCHOR + NATURAL_TO_ELO * (theta[part] - theta[anchor].mean())
    return elo


def bradley_terry(
    systems: list[str],
    outcomes: list[tuple[str, str, float]],
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = ALPHA,
) -> Ratings:
    """Ratings and ``level`` bootstrap intervals (``rounds`` rounds, ``seed``) from ``outcomes``: (system,
    other system, the first's score: 1 win, ½ tie, 0 loss)."""
    if rounds < 1:
        raise ValueError(f"bootstrap rounds must be at least 1, got {rounds}")
    index = {name: k for k, name in enumerate(systems)}
    for a, b, s in outcomes:
        if a not in index or b not in index or a == b or s not in (0.0, 0.5, 1.0):
            raise ValueError(f"bad outcome ({a!r}, {b!r}, {s!r})")
    seen = sorted({index[a] for a, _, _ in outcomes} | {index[b] for _, b, _ in outcomes})
    unrated = [systems[k] for k in range(len(systems)) if k not in seen]
    nan = np.full(len(systems), np.nan)
    if not seen:
        return Ratings(systems, nan, nan.copy(), nan.copy(), rounds, level, seed, [], unrated=unrated)

    # Fit over the systems with votes only (a system nobody saw has no rating, not an average one).
    local = {k: i for i, k in enumerate(seen)}
    first = np.array([local[index[a]] for a, _, _ in outcomes])
    second = np.array([local[index[b]] for _, b, _ in outcomes])
    score = np.array([s for _, _, s in outcomes], dtype=float)
    n = len(seen)
    matrix = score_matrix(n, first, second, score)
    parts = graph_components(matrix)
    infinite = unbounded(matrix)
    point = to_elo(fit_strengths(matrix, alpha), parts, infinite)

    # Bootstrap: resample the votes (multinomial counts over the distinct outcomes, FastChat's trick).
    rows, counts = np.unique(np.stack([first, second, np.rint(score * 2).astype(int)]), axis=1, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(outcomes), counts / counts.sum(), size=rounds)  # (rounds, distinct)
    boot = np.empty((rounds, n))
    split = 0
    for r in range(rounds):
        m = score_matrix(n, rows[0], rows[1], rows[2] / 2, draws[r])
        split += len(graph_components(m)) > len(parts)
        boot[r] = to_elo(fit_strengths(m, alpha), parts, unbounded(m))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail], axis=0)

    wins = matrix.sum(axis=1)  # each system's total score (wins + ½ ties)
    rating, lower, upper = nan.copy(), nan.copy(), nan.copy()
    rating[seen], lower[seen], upper[seen] = point, low, high
    full_boot = np.full((rounds, len(systems)), np.nan)
    full_boot[:, seen] = boot
    return Ratings(
        systems=list(systems),
        rating=rating,
        lower=lower,
        upper=upper,
        rounds=rounds,
        level=level,
        seed=seed,
        components=[[systems[seen[i]] for i in part] for part in parts],
        no_wins=[systems[seen[i]] for i in range(n) if wins[i] == 0],
        no_losses=[systems[seen[i]] for i in range(n) if infinite[i] and wins[i] > 0],
        unrated=unrated,
        split_rounds=split,
        bootstrap=full_boot,
    )
