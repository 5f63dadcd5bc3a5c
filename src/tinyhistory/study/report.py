"""``tinyhistory study report``: the Elo table with intervals and everything else the votes say.

Writes ``report.md``, ``report.json`` and ``ratings.png`` (ratings with their intervals) into ``STUDY/report/`` (or
``--out``): ratings (:mod:`~tinyhistory.study.rating`), the win-rate matrix, votes per pair of systems and per
rater, rater agreement on pairs rated by several raters, reasons per system, the automatic metrics per system
(:mod:`~tinyhistory.study.metrics`) with their rank agreement with the human ratings, and every vote.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tinyhistory.study.layout import VOTES_FILE, Study
from tinyhistory.study.rating import ALPHA, Ratings, bradley_terry
from tinyhistory.study.votes import REASONS, Vote, read_votes

OUTCOME_WORDS = {"left": "left better", "right": "right better", "tie": "tie", "both_bad": "both bad"}


def _outcome(vote: Vote) -> str:
    """The vote in system terms (sides forgotten): the winner's name, "tie" or "both_bad"."""
    return vote.winner or vote.choice


def agreement(votes: list[Vote]) -> dict:
    """Share of two raters' answers on the same pair that agree (winner, tie or both bad alike)."""
    by_pair: dict[str, dict[str, str]] = defaultdict(dict)
    for vote in votes:
        by_pair[vote.pair][vote.rater] = _outcome(vote)
    same = total = 0
    pairs = 0
    for answers in by_pair.values():
        if len(answers) < 2:
            continue
        pairs += 1
        for a, b in itertools.combinations(answers.values(), 2):
            total += 1
            same += a == b
    return {
        "pairs_rated_by_several": pairs,
        "rater_pairs_compared": total,
        "agreement": same / total if total else None,
    }


def tallies(systems: list[str], votes: list[Vote]) -> dict[str, dict]:
    out = {s: {"votes": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for s in systems}
    for vote in votes:
        for system in (vote.left, vote.right):
            row = out[system]
            row["votes"] += 1
            if vote.choice == "tie":
                row["ties"] += 1
            elif vote.choice == "both_bad":
                row["both_bad"] += 1
            elif vote.winner == system:
                row["wins"] += 1
            else:
                row["losses"] += 1
    for row in out.values():
        row["score"] = (row["wins"] + 0.5 * (row["ties"] + row["both_bad"])) / row["votes"] if row["votes"] else None
    return out


def win_matrix(systems: list[str], votes: list[Vote]) -> dict[str, dict[str, dict]]:
    """``[row][column]``: how often row beat column (score share, ties half) and over how many votes."""
    score: dict = defaultdict(float)
    count: Counter = Counter()
    for vote in votes:
        for a, b in ((vote.left, vote.right), (vote.right, vote.left)):
            score[a, b] += vote.score(a)
            count[a, b] += 1
    return {
        a: {b: {"share": score[a, b] / count[a, b] if count[a, b] else None, "votes": count[a, b]} for b in systems}
        for a in systems
    }


def per_pair(votes: list[Vote]) -> dict[str, dict]:
    """Votes per pair of systems (over storyboards and seeds): wins of each, ties, both bad."""
    out: dict[str, dict] = {}
    for vote in votes:
        a, b = sorted((vote.left, vote.right))
        row = out.setdefault(f"{a} vs {b}", {"a": a, "b": b, "votes": 0, a: 0, b: 0, "tie": 0, "both_bad": 0})
        row["votes"] += 1
        row[_outcome(vote)] += 1
    return dict(sorted(out.items()))


def per_rater(votes: list[Vote]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for vote in votes:
        row = out.setdefault(vote.rater, {"votes": 0, "left": 0, "right": 0, "tie": 0, "both_bad": 0})
        row["votes"] += 1
        row[vote.choice] += 1
    return dict(sorted(out.items()))


def reasons_per_system(systems: list[str], votes: list[Vote]) -> dict[str, dict[str, dict[str, int]]]:
    """``[system][won|lost|tie|both_bad][reason]``: the reasons given on the votes the system won, lost, tied or
    was called bad in."""
    out = {s: {k: dict.fromkeys(REASONS, 0) for k in ("won", "lost", "tie", "both_bad")} for s in systems}
    for vote in votes:
        for system in (vote.left, vote.right):
            if vote.choice in ("tie", "both_bad"):
                kind = vote.choice
            else:
                kind = "won" if vote.winner == system else "lost"
            for reason in vote.reasons:
                if reason in REASONS:
                    out[system][kind][reason] += 1
    return out


def build_report(
    root: str | Path,
    out: str | Path | None = None,
    rounds: int = 1000,
    seed: int = 0,
    metrics: bool = True,
    progress: bool = True,
) -> dict:
    """Read the study and its votes, write the report files, return what ``report.json`` holds."""
    study = Study.load(root)
    out = Path(out) if out is not None else study.root / "report"
    votes, problems = read_votes(study.root / VOTES_FILE)
    kept = []
    for vote in votes:
        unknown = [s for s in (vote.left, vote.right) if s not in study.systems]
        if unknown or vote.storyboard not in study.storyboards:
            what = f"system {unknown[0]}" if unknown else f"storyboard {vote.storyboard}"
            problems.append(f"a vote by {vote.rater} at {vote.time} names {what}, which this study lacks; skipped")
            continue
        kept.append(vote)
    votes = kept
    systems = list(study.systems)
    ratings = bradley_terry(systems, [(v.left, v.right, v.score(v.left)) for v in votes], rounds, seed)
    order = sorted(systems, key=lambda s: (-np.nan_to_num(ratings.rating[systems.index(s)], nan=-np.inf), s))

    metric_rows, per_video, taus = {}, {}, {}
    if metrics:
        from tinyhistory.study.metrics import METRICS, rank_agreement, system_metrics

        per_video, metric_rows = system_metrics(study, progress)
        human = {s: (None if s in ratings.unrated else float(ratings.rating[systems.index(s)])) for s in systems}
        taus = {name: rank_agreement(human, {s: metric_rows[s][name] for s in systems}) for name in METRICS}

    report = {
        "study": str(study.root),
        "votes": len(votes),
        "raters": len({v.rater for v in votes}),
        "problems": problems,
        "method": method_text(ratings),
        "bootstrap_rounds": rounds,
        "bootstrap_seed": seed,
        "interval_level": ratings.level,
        "order": order,
        "ratings": ratings.as_dict(),
        "components": ratings.components,
        "no_wins": ratings.no_wins,
        "no_losses": ratings.no_losses,
        "unrated": ratings.unrated,
        "split_bootstrap_rounds": ratings.split_rounds,
        "tallies": tallies(systems, votes),
        "win_matrix": win_matrix(systems, votes),
        "per_pair": per_pair(votes),
        "per_rater": per_rater(votes),
        "agreement": agreement(votes),
        "reasons": reasons_per_system(systems, votes),
        "metrics": {"per_system": metric_rows, "per_video": per_video, "kendall_tau": taus},
        "every_vote": [json.loads(v.to_json()) for v in votes],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plot_ratings(ratings, order, out / "ratings.png")
    (out / "report.md").write_text(render_markdown(report, study), encoding="utf-8")
    return report


def method_text(ratings: Ratings) -> str:
    return (
        "Bradley–Terry maximum likelihood on the Elo scale (400 points = 10:1 odds; mean rating 1000), fitted with "
        f"choix's I-LSR (alpha {ALPHA:g}); a tie and a 'both bad' count half a win for each side, as in FastChat's "
        f"rating_systems.py. {round(ratings.level * 100)} % intervals: percentile bootstrap over votes, "
        f"{ratings.rounds} rounds (seed {ratings.seed})."
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render_markdown(report: dict, study: Study) -> str:
    r, t = report["ratings"], report["tallies"]
    level = round(report["interval_level"] * 100)
    lines = [
        f"# Study report: {Path(report['study']).name}",
        "",
        f"{report['votes']} votes by {report['raters']} raters on {len(study.systems)} systems, "
        f"{len(study.storyboards)} storyboards × {len(study.seeds)} seeds.",
        "",
    ]
    for problem in report["problems"]:
        lines.append(f"> **Skipped:** {problem}")
    if report["problems"]:
        lines.append("")
    lines += [
        "## Ratings",
        "",
        f"| rank | system | Elo | {level} % interval | votes | wins | ties | both bad | losses | score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, system in enumerate(report["order"], 1):
        row, tally = r[system], t[system]
        if row["unbounded"]:  # an infinite ML rating: no number, no interval (see the note under the table)
            elo, interval = ("−∞ *" if row["unbounded"] == "below" else "+∞ *"), "–"
        else:
            elo = _fmt(row["rating"])
            interval = "–" if row["rating"] is None else f"{_fmt(row['lower'])} … {_fmt(row['upper'])}"
        place = rank if row["rating"] is not None else "–"
        lines.append(
            f"| {place} | {system} | {elo} | {interval} | {tally['votes']} | {tally['wins']} | "
            f"{tally['ties']} | {tally['both_bad']} | {tally['losses']} | {_fmt(tally['score'], 2)} |"
        )
    lines += ["", report["method"], ""]
    open_ended = [f"no wins and no ties ({', '.join(report['no_wins'])})"] if report["no_wins"] else []
    open_ended += [f"no losses and no ties ({', '.join(report['no_losses'])})"] if report["no_losses"] else []
    if open_ended:
        lines += [
            "\\* " + "; ".join(open_ended) + ": the maximum-likelihood rating is infinite (every resample says the "
            "same), so there is no number and no interval; the data say only that it is "
            + ("below" if not report["no_losses"] else "above" if not report["no_wins"] else "below (above)")
            + " the systems it met. The fit's small regularisation holds it at a finite value for ordering, which "
            "the anchor (mean 1000) leaves out so that it does not move the other ratings.",
            "",
        ]
    if len(report["components"]) > 1:
        parts = "; ".join("{" + ", ".join(p) + "}" for p in report["components"])
        lines.append(
            f"**The comparison graph is in {len(report['components'])} pieces: {parts}.** No vote links them, not "
            "even through other systems, so ratings compare only within a piece; each piece is anchored at mean "
            "1000 on its own."
        )
        lines.append("")
    if report["unrated"]:
        lines += [f"No votes yet: {', '.join(report['unrated'])} (no rating).", ""]
    if report["split_bootstrap_rounds"]:
        lines += [
            f"{report['split_bootstrap_rounds']} of {report['bootstrap_rounds']} bootstrap rounds drew no vote on "
            "some link of the comparison graph (few votes): the intervals are wide for a reason.",
            "",
        ]
    lines += ["![ratings](ratings.png)", ""]

    systems = report["order"]
    lines += ["## Win rates", "", "Row beats column (ties and both bad half), over how many votes.", ""]
    lines += ["| | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for a in systems:
        cells = []
        for b in systems:
            cell = report["win_matrix"][a][b]
            cells.append("" if a == b else f"{_fmt(cell['share'], 2)} ({cell['votes']})")
        lines.append(f"| **{a}** | " + " | ".join(cells) + " |")
    lines += ["", "## Votes per pair of systems", "", "| pair | votes | first wins | second wins | tie | both bad |"]
    lines.append("|---|---|---|---|---|---|")
    for name, row in report["per_pair"].items():
        lines.append(
            f"| {name} | {row['votes']} | {row[row['a']]} | {row[row['b']]} | {row['tie']} | {row['both_bad']} |"
        )
    lines += [
        "",
        "## Votes per rater",
        "",
        "| rater | votes | left | right | tie | both bad |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["per_rater"].items():
        lines.append(f"| {name} | {row['votes']} | {row['left']} | {row['right']} | {row['tie']} | {row['both_bad']} |")
    a = report["agreement"]
    lines += ["", "## Rater agreement", ""]
    if a["agreement"] is None:
        lines.append("No pair was rated by two raters yet.")
    else:
        lines.append(
            f"{a['pairs_rated_by_several']} pairs were rated by several raters; {a['agreement']:.0%} of "
            f"{a['rater_pairs_compared']} two-rater comparisons gave the same answer (same winner, tie or both bad)."
        )
    lines += ["", "## Reasons per system", "", "Reasons ticked on the votes a system won / lost (both bad: lost).", ""]
    lines += ["| system | " + " | ".join(REASONS) + " |", "|---" * (len(REASONS) + 1) + "|"]
    for system in systems:
        given = report["reasons"][system]
        cells = [f"{given['won'][x]} / {given['lost'][x] + given['both_bad'][x]}" for x in REASONS]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += ["", "## Automatic metrics", ""]
    per_system = report["metrics"]["per_system"]
    if not per_system:
        lines.append("Not computed (--no-metrics).")
    else:
        from tinyhistory.study.metrics import METRIC_FPS, METRICS

        reference = study.history or "the first second of each video itself"
        lines += [
            f"Means over each system's videos at {METRIC_FPS:g} fps (as `tinyhistory eval consistency`), against "
            f"{reference}.",
            "",
        ]
        for name, words in METRICS.items():
            lines.append(f"- `{name}`: {words}")
        lines += ["", "| system | Elo | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
        for system in systems:
            cells = [_fmt(per_system[system][m], 3) for m in METRICS]
            lines.append(f"| {system} | {_fmt(r[system]['rating'])} | " + " | ".join(cells) + " |")
        lines += ["", "Rank agreement with the human ratings (Kendall's τ-b over systems; +1: the same order):", ""]
        for name, tau in report["metrics"]["kendall_tau"].items():
            if tau["tau"] is None:
                lines.append(f"- `{name}`: not defined ({tau['why']})")
            else:
                lines.append(
                    f"- `{name}`: τ = {tau['tau']:+.2f} over {tau['systems']} systems (p = {tau['p_value']:.2f})"
                )
    lines += ["", "## Every vote", "", "| # | time | rater | storyboard | seed | left | right | choice | reasons |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for number, v in enumerate(report["every_vote"], 1):
        lines.append(
            f"| {number} | {v['time']} | {_md(v['rater'])} | {v['storyboard']} | {v['seed']} | {v['left']} | "
            f"{v['right']} | {OUTCOME_WORDS[v['choice']]} | {', '.join(v['reasons'])} |"
        )
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """A rater's name inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def plot_ratings(ratings: Ratings, order: list[str], path: Path) -> None:
    """Ratings with their intervals, best at the top; a system with an infinite rating (no wins / no losses) is an
    arrow at the edge of the plot, not a point at its arbitrary regularised value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s for s in order if s not in ratings.unrated]
    infinite = set(ratings.no_wins) | set(ratings.no_losses)
    finite = [ratings.systems.index(s) for s in shown if s not in infinite]
    if finite:
        low_edge = float(np.nanmin(ratings.lower[finite])) - 100
        high_edge = float(np.nanmax(ratings.upper[finite])) + 100
    else:
        low_edge, high_edge = 800.0, 1200.0
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(shown), 2) + 1.2), dpi=100)
    for y, system in enumerate(reversed(shown)):
        k = ratings.systems.index(system)
        if system in ratings.no_wins:
            ax.annotate("no wins", (low_edge, y), (low_edge + 80, y), va="center",
                        arrowprops={"arrowstyle": "->", "color": "#b00020"})  # fmt: skip
        elif system in ratings.no_losses:
            ax.annotate("no losses", (high_edge, y), (high_edge - 80, y), va="center", ha="right",
                        arrowprops={"arrowstyle": "->", "color": "#b00020"})  # fmt: skip
        else:
            ax.plot([ratings.lower[k], ratings.upper[k]], [y, y], color="#2458b3", linewidth=2)
            ax.plot([ratings.rating[k]], [y], "o", color="#1c1c1c")
    ax.set_yticks(range(len(shown)), list(reversed(shown)))
    ax.axvline(1000, color="#999", linewidth=0.8, linestyle=":")
    ax.set_xlim(low_edge - 20, high_edge + 20)
    ax.set_xlabel(f"Elo (Bradley–Terry), {round(ratings.level * 100)} % bootstrap interval, {ratings.rounds} rounds")
    ax.set_ylim(-0.7, len(shown) - 0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
