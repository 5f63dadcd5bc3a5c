"""``tinyhistory study``: the Bradley–Terry fit and its intervals, the vote log, the schedule, the study folder, the
server's file rules and the report. The browser test is ``test_study_browser.py``."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from study_videos import STORYBOARDS, fake_generate_output, fake_system, write_storyboards

from tinyhistory.cli import main
from tinyhistory.study import StudyError
from tinyhistory.study.layout import Study, create_study
from tinyhistory.study.rating import NATURAL_TO_ELO, bradley_terry
from tinyhistory.study.schedule import Scheduler, all_pairs
from tinyhistory.study.votes import Vote, VoteLog, read_votes

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "miniature" / "stage2" / "proposed"


# -- helpers ----------------------------------------------------------------------------------------------------------
def simulate(rng: np.random.Generator, names: list[str], elo: np.ndarray, n: int) -> list[tuple[str, str, float]]:
    """``n`` votes between uniformly drawn pairs, each won with the Bradley–Terry probability of the true ``elo``."""
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        p = 1.0 / (1.0 + 10 ** ((elo[j] - elo[i]) / 400.0))
        out.append((names[i], names[j], 1.0 if rng.random() < p else 0.0))
    return out


def make_vote(rater: str, pair, left: str, choice: str, reasons=()) -> Vote:
    right = pair.b if left == pair.a else pair.a
    return Vote(rater, pair.key, pair.storyboard, pair.seed, left, right, "0" * 16, "1" * 16, choice, tuple(reasons))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def three_systems(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Three `generate`-layout folders (A, B, C) over the two storyboards, and the storyboard files."""
    base = tmp_path_factory.mktemp("systems")
    stories = write_storyboards(base / "storyboards")
    for k, name in enumerate("ABC"):
        fake_system(base / name, k)
    return base, stories


def new_study(three_systems, out: Path) -> Study:
    base, stories = three_systems
    systems = [f"{n}={base / n}" for n in "ABC"]
    return create_study(out, systems, [str(s) for s in stories], progress=False)


# -- the fit -------------------------------------------------------------------------------------------------------
def test_fit_recovers_known_strengths():
    """50 simulated studies of 4 systems with known ratings, 300 votes each: the order comes out right, the mean
    estimate is within 15 Elo of the truth, and the 95 % intervals (200 bootstrap rounds) cover the true rating in
    at least 90 % of the 200 (study, system) cases (nominal 95 %; 90 % is 3 binomial standard deviations below;
    measured: 96.5 %). All four intervals of a study at once cover less often (four 95 % intervals, not a joint
    one: about 0.95⁴ ≈ 81 % if they were independent; measured 44 of 50): at least 75 % is asked of that."""
    truth = np.array([1225.0, 1075.0, 925.0, 775.0])  # mean 1000: the fit's anchor
    names = ["w", "x", "y", "z"]
    covered, all_four, right_order, errors = 0, 0, 0, []
    for study in range(50):
        rng = np.random.default_rng(study)
        r = bradley_terry(names, simulate(rng, names, truth, 300), rounds=200, seed=study)
        inside = (r.lower <= truth) & (truth <= r.upper)
        covered += int(inside.sum())
        all_four += bool(inside.all())
        right_order += list(np.argsort(-r.rating)) == [0, 1, 2, 3]
        errors.append(r.rating - truth)
        assert r.components == [names] and not r.no_wins and not r.unrated
    coverage = covered / 200
    print(f"coverage {coverage:.3f} (all four: {all_four}/50), right order in {right_order}/50, mean error "
          f"{np.mean(errors, 0).round(1)}")  # fmt: skip
    assert coverage >= 0.90 and all_four >= 38
    assert right_order >= 48
    assert np.abs(np.mean(errors, axis=0)).max() < 15


def test_fit_is_the_maximum_likelihood_with_ties_as_half_wins():
    """The choix fit equals a direct maximisation of the Bradley–Terry likelihood where a tie scores ½ for each."""
    from scipy.optimize import minimize
    from scipy.special import log_expit

    names = ["a", "b", "c"]
    outcomes = [("a", "b", 1.0)] * 9 + [("a", "b", 0.0)] * 4 + [("a", "b", 0.5)] * 3
    outcomes += [("b", "c", 1.0)] * 7 + [("c", "b", 1.0)] * 5 + [("c", "a", 0.5)] * 6 + [("c", "a", 1.0)] * 2
    outcomes += [("a", "c", 1.0)] * 8
    r = bradley_terry(names, outcomes, rounds=20)
    first = np.array([names.index(a) for a, _, _ in outcomes])
    second = np.array([names.index(b) for _, b, _ in outcomes])
    score = np.array([s for _, _, s in outcomes])

    def nll(theta):
        d = theta[first] - theta[second]
        return -(score * log_expit(d) + (1 - score) * log_expit(-d)).sum()

    theta = minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    expected = 1000 + NATURAL_TO_ELO * (theta - theta.mean())
    np.testing.assert_allclose(r.rating, expected, atol=0.5)
    # a tie is half a win: two ties weigh like one win and one loss
    ties = bradley_terry(["p", "q"], [("p", "q", 0.5)] * 2 + [("p", "q", 1.0)] * 3, rounds=5)
    split = bradley_terry(["p", "q"], [("p", "q", 1.0), ("p", "q", 0.0)] + [("p", "q", 1.0)] * 3, rounds=5)
    np.testing.assert_allclose(ties.rating, split.rating, atol=1e-6)
    assert ties.rating[0] - ties.rating[1] == pytest.approx(400 * math.log10(4 / 1), abs=0.5)  # 4 : 1 in score


def test_ties_no_wins_and_a_disconnected_graph():
    only_ties = bradley_terry(["a", "b", "c"], [("a", "b", 0.5), ("b", "c", 0.5), ("c", "a", 0.5)] * 3, rounds=50)
    np.testing.assert_allclose(only_ties.rating, 1000, atol=1e-6)

    # "d" never wins or ties: flagged, finite, below everything it lost to; the others are barely moved by it
    outcomes = [("a", "b", 1.0)] * 6 + [("a", "b", 0.0)] * 4 + [("d", "a", 0.0)] * 5 + [("b", "d", 1.0)] * 5
    r = bradley_terry(["a", "b", "d"], outcomes, rounds=100)
    assert r.no_wins == ["d"] and r.no_losses == []
    assert np.isfinite(r.rating).all() and r.rating[2] < min(r.rating[:2]) - 800
    assert r.as_dict()["d"]["lower"] is None and r.as_dict()["d"]["unbounded"] == "below"
    assert r.rating[:2].mean() == pytest.approx(1000)  # the anchor leaves out d's arbitrary value
    assert r.rating[0] - r.rating[1] == pytest.approx(400 * math.log10(6 / 4), abs=1.0)

    # two pieces that no vote links, and a system with no votes
    pieces = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)] + [("c", "d", 1.0), ("c", "d", 0.0), ("c", "d", 0.5)]
    r = bradley_terry(["a", "b", "c", "d", "e"], pieces, rounds=100)
    assert r.components == [["a", "b"], ["c", "d"]] and r.unrated == ["e"]
    assert r.rating[:2].mean() == pytest.approx(1000) and r.rating[2:4] == pytest.approx([1000, 1000])
    assert r.rating[0] - r.rating[1] == pytest.approx(400 * math.log10(3), abs=0.5) and np.isnan(r.rating[4])
    assert r.as_dict()["e"]["rating"] is None and r.as_dict()["c"]["component"] == 1


# -- the vote log and the schedule ---------------------------------------------------------------------------------
def test_votes_survive_a_truncated_last_line(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    pair = all_pairs(["A", "B"], ["meadow"], [0])[0]
    log = VoteLog(tmp_path / "votes.jsonl")
    for choice in ("left", "tie", "both_bad"):
        log.append(make_vote("ann", pair, "A", choice))
    assert len(synced) >= 3  # one fsync per vote (plus the folder's, for a new file)
    with open(log.path, "ab") as f:
        f.write(b'{"rater": "ben", "pair": "meadow#0#A#B", "sto')  # a power cut in the middle of a write
    votes, problems = read_votes(log.path)
    assert [v.choice for v in votes] == ["left", "tie", "both_bad"]
    assert len(problems) == 1 and "line 4 is not a vote (a truncated last write?)" in problems[0]
    log.append(make_vote("ben", pair, "B", "right"))  # starts on a new line: the fragment keeps its own line
    votes, problems = read_votes(log.path)
    assert [v.choice for v in votes] == ["left", "tie", "both_bad", "right"] and votes[-1].winner == "A"
    assert len(problems) == 1 and "line 4 is not a vote: " in problems[0]


def test_schedule_balances_pairs_and_never_repeats_one():
    pairs = all_pairs(["A", "B", "C"], ["meadow", "tree"], [0])
    assert len(pairs) == 6
    scheduler = Scheduler(pairs, "salt")
    raters = ["ann", "ben", "cy", "dee"]
    seen: dict[str, list[str]] = {r: [] for r in raters}
    lefts = Counter()
    for _ in range(6):
        shown = {r: scheduler.next_for(r) for r in raters}  # all four look at a pair at once
        assert scheduler.next_for("ann") == shown["ann"]  # a reload shows the same pair
        for rater, pair in shown.items():
            left, _ = scheduler.sides(rater, pair)
            assert scheduler.sides(rater, pair)[0] == left  # the same way round every time
            lefts[left == pair.a] += 1
            seen[rater].append(pair.key)
            scheduler.record(make_vote(rater, pair, left, "left"))
        counts = [scheduler.counts[p.key] for p in pairs]
        assert max(counts) - min(counts) <= 1  # least-compared first, counting the pairs on screens
    assert all(len(set(keys)) == 6 for keys in seen.values())  # every pair once per rater
    assert all(scheduler.next_for(r) is None for r in raters) and scheduler.progress("ann") == (6, 6)
    assert 6 <= lefts[True] <= 18  # the coin is fair enough (24 draws)
    rebuilt = Scheduler(pairs, "salt", [make_vote("ann", pairs[0], "A", "tie")])  # from the votes on disk
    assert rebuilt.progress("ann") == (1, 6) and rebuilt.next_for("ann") != pairs[0]


# -- the study folder ----------------------------------------------------------------------------------------------
def test_study_new_generates_copies_and_resumes(tmp_path, capsys):
    """A folder system is copied in, a checkpoint system is generated by `tinyhistory generate` (miniature, 2
    steps, a 1-s storyboard); a rerun generates nothing; a video interrupted after its session was saved is
    continued from that session."""
    story = write_storyboards(tmp_path / "boards", {"meadow": STORYBOARDS["meadow"]})[0]
    fake_generate_output(tmp_path / "folder", "meadow", STORYBOARDS["meadow"], 0)
    out = tmp_path / "study"
    args = ["study", "new", "--out", str(out), "--system", f"F={tmp_path / 'folder'}", "--system"]
    args += [f"P={CHECKPOINT}", "--storyboard", str(story), "--steps", "2", "--no-progress"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert "P: generating meadow seed 0 (1 of 1)" in stdout
    study = Study.load(out, verify=True)
    assert sorted(v.file for v in study.videos.values()) == ["videos/F/meadow.seed0.mp4", "videos/P/meadow.seed0.mp4"]
    generated = out / "videos" / "P" / "meadow.seed0.mp4"
    for suffix in (".png", ".segments.jsonl", ".session"):
        assert generated.with_name(generated.name + suffix).is_file()
    assert json.loads((out / "storyboards" / "meadow.json").read_text())["shots"][0]["end"] == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("nothing is missing: nothing may be generated")

    create_study(out, [f"F={tmp_path / 'folder'}", f"P={CHECKPOINT}"], [str(story)], progress=False,
                 generate_fn=must_not_run)  # fmt: skip

    # Interrupted after the session was saved, before the video was registered: continued from the session.
    video = study.video_for("P", "meadow", 0)
    kept = generated.read_bytes()
    data = json.loads((out / "study.json").read_text())
    del data["videos"][video.id]
    (out / "study.json").write_text(json.dumps(data))
    generated.unlink()
    calls = []

    def resume(checkpoint, storyboard, target, **kwargs):
        calls.append(kwargs)
        Path(target).write_bytes(kept)
        return {}

    create_study(out, [f"P={CHECKPOINT}"], [str(story)], progress=False, generate_fn=resume)
    assert calls and calls[0]["resume"] == generated.with_name(generated.name + ".session")
    assert Study.load(out).video_for("P", "meadow", 0).id == video.id


def _one_line_error(capsys, args: list[str], needle: str) -> str:
    code, _, stderr = run_cli(args, capsys)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("tinyhistory: error: ") and needle in stderr, stderr
    return stderr


def test_bad_inputs_are_one_line_errors_and_lose_nothing(three_systems, tmp_path, capsys):
    base, stories = three_systems
    boards = [str(s) for s in stories]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    new = ["study", "new", "--out", str(tmp_path / "s1"), "--storyboard", *boards, "--system", f"A={base / 'A'}"]
    assert "holds no videos" in _one_line_error(capsys, new + ["--system", f"E={tmp_path / 'empty'}"], "no videos")
    assert not (tmp_path / "s1").exists()  # checked before anything was written
    _one_line_error(capsys, new + ["--system", f"A2={base / 'A'}"], "byte-identical to system A's video")
    assert not (tmp_path / "s1").exists()

    # A system whose "tree" video was made from another storyboard (its second shot says something else).
    other = tmp_path / "other"
    fake_system(other, 3)
    fake_generate_output(other, "tree", STORYBOARDS["tree"], 3, prompts={1: "A dragon lands."})
    message = _one_line_error(capsys, new + ["--system", f"X={other}"], "another storyboard than tree")
    assert "'A dragon lands.'" in message and not (tmp_path / "s1").exists()

    # An existing study given a storyboard of the same name with other shots.
    study = new_study(three_systems, tmp_path / "s2")
    before = (tmp_path / "s2" / "study.json").read_bytes()
    changed = write_storyboards(tmp_path / "changed", {"meadow": {"shots": [{"start": 0, "end": 1, "prompt": "Hi."}]}})
    args = ["study", "new", "--out", str(study.root), "--storyboard", str(changed[0]), "--system", f"A={base / 'A'}"]
    _one_line_error(capsys, args, "differs from the study's copy")
    assert (tmp_path / "s2" / "study.json").read_bytes() == before

    # A registered video whose path leads outside the study: edited in study.json, or through a symlink.
    outside = tmp_path / "outside.mp4"
    shutil.copyfile(base / "A" / "meadow.mp4", outside)
    data = json.loads(before)
    first = next(iter(data["videos"]))
    data["videos"][first]["file"] = "../outside.mp4"
    (study.root / "study.json").write_text(json.dumps(data))
    for command in ("serve", "report"):
        _one_line_error(capsys, ["study", command, str(study.root)], "is outside the study folder")
    (study.root / "study.json").write_bytes(before)
    target = study.root / json.loads(before)["videos"][first]["file"]
    target.unlink()
    target.symlink_to(outside)
    _one_line_error(capsys, ["study", "report", str(study.root), "--no-metrics"], "is outside the study folder")
    with pytest.raises(StudyError, match="outside the study folder"):
        Study.load(study.root)


def test_report_with_a_truncated_votes_file_keeps_the_votes(three_systems, tmp_path, capsys):
    study = new_study(three_systems, tmp_path / "study")
    pairs = all_pairs(list(study.systems), list(study.storyboards), study.seeds)
    log = VoteLog(study.root / "votes.jsonl")
    for k, pair in enumerate(pairs):
        log.append(make_vote("ann", pair, pair.a, ["left", "right", "tie"][k % 3]))
    with open(log.path, "ab") as f:
        f.write(b'{"rater": "ann", "pai')
    before = log.path.read_bytes()
    code, stdout, stderr = run_cli(["study", "report", str(study.root), "--no-metrics", "--rounds", "50"], capsys)
    assert code == 0 and "6 votes, 1 raters" in stdout
    assert "votes.jsonl line 7 is not a vote (a truncated last write?)" in stderr
    assert log.path.read_bytes() == before  # nothing rewritten, nothing lost
    report = json.loads((study.root / "report" / "report.json").read_text())
    assert len(report["every_vote"]) == 6 and "line 7" in report["problems"][0]


# -- the server ----------------------------------------------------------------------------------------------------
def _request(port: int, method: str, path: str, body: dict | None = None, host: str | None = None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host or f"127.0.0.1:{port}")
    payload = json.dumps(body).encode() if body is not None else b""
    for key, value in {**(headers or {}), "Content-Length": str(len(payload))}.items():
        connection.putheader(key, value)
    connection.endheaders(payload)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.headers, data


def test_server_binds_loopback_and_serves_only_registered_videos(three_systems, tmp_path):
    import psutil

    from tinyhistory.study.server import exposure_warning, make_server

    study = new_study(three_systems, tmp_path / "study")
    (tmp_path / "secret.txt").write_text("outside")
    server, app = make_server(study.root, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        listening = [
            c for c in psutil.Process().net_connections(kind="inet") if c.status == "LISTEN" and c.laddr.port == port
        ]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]  # the socket audit: loopback only

        video = next(iter(study.videos.values()))
        status, headers, data = _request(port, "GET", f"/video/{video.id}")
        assert status == 200 and data == (study.root / video.file).read_bytes()
        status, headers, data = _request(port, "GET", f"/video/{video.id}", headers={"Range": "bytes=10-19"})
        assert status == 206 and data == (study.root / video.file).read_bytes()[10:20]
        assert headers["Content-Range"].startswith("bytes 10-19/")
        for path in [
            "/video/../study.json",
            "/video/..%2fstudy.json",
            "/video/%2e%2e/%2e%2e/secret.txt",
            f"/video/{video.id}/../../study.json",
            f"/video/{video.id.upper()}",
            "/video/" + "0" * 16,
            f"/{video.file}",
            "/study.json",
            "/votes.jsonl",
            "/static/../study.json",
            "/static/../../../secret.txt",
            "//etc/passwd",
            "/../secret.txt",
        ]:
            assert _request(port, "GET", path)[0] == 404, path
        assert _request(port, "GET", "/", host="attacker.example:80")[0] == 403  # DNS rebinding
        status, _, page = _request(port, "GET", "/")
        assert status == 200 and b"Which video is better?" in page

        # The vote API: the next pair, a vote, the same vote again (not counted twice), bad input.
        status, _, data = _request(port, "GET", "/api/next?rater=ann")
        first = json.loads(data)
        assert status == 200 and first["done"] == 0 and first["total"] == 6
        assert set(first["pair"]) == {"token", "left", "right", "storyboard", "duration"}
        assert not any(name in json.dumps(first) for name in ('"A"', '"B"', '"C"', "videos/"))  # blind
        vote = {"rater": "ann", "token": first["pair"]["token"], "choice": "left", "reasons": ["motion"]}
        status, _, data = _request(port, "POST", "/api/vote", vote)
        assert status == 200 and json.loads(data)["done"] == 1
        status, _, data = _request(port, "POST", "/api/vote", vote)
        assert status == 200 and "not counted twice" in json.loads(data)["note"]
        for bad in [
            {**vote, "choice": "up"},
            {**vote, "reasons": ["taste"]},
            {**vote, "token": "x"},
            {**vote, "rater": ""},
        ]:
            assert _request(port, "POST", "/api/vote", bad)[0] == 400
        votes, _ = read_votes(study.root / "votes.jsonl")
        assert len(votes) == 1 and votes[0].reasons == ("motion",)
        left_id = first["pair"]["left"].rsplit("/", 1)[1]
        assert votes[0].left == study.videos[left_id].system and votes[0].left_video == left_id
    finally:
        server.shutdown()
        server.server_close()
    assert exposure_warning("127.0.0.1", 7870) is None and exposure_warning("localhost", 7870) is None
    warning = exposure_warning("0.0.0.0", 7870)
    assert warning.startswith("WARNING") and "anyone who can reach this machine" in warning and "\n" not in warning


def test_report_tables_and_metrics(three_systems, tmp_path):
    """Votes of three raters where A > B > C: the ratings, every table, the metrics and Kendall's τ."""
    from tinyhistory.study.report import build_report

    study = new_study(three_systems, tmp_path / "study")
    pairs = all_pairs(list(study.systems), list(study.storyboards), study.seeds)
    log = VoteLog(study.root / "votes.jsonl")
    rank = {"A": 0, "B": 1, "C": 2}
    for rater in ("ann", "ben", "cy"):
        for pair in pairs:
            better = min(pair.systems, key=rank.get)
            choice = "tie" if (rater, pair.storyboard, pair.a) == ("cy", "tree", "A") else "left"
            log.append(make_vote(rater, pair, better, choice, ["motion"] if rater == "ann" else []))
    report = build_report(study.root, rounds=200, progress=False)
    assert report["order"] == ["A", "B", "C"] and report["votes"] == 18 and report["raters"] == 3
    ratings = report["ratings"]
    assert ratings["A"]["lower"] < ratings["A"]["rating"] < ratings["A"]["upper"]
    assert report["no_wins"] == [] and report["win_matrix"]["A"]["C"]["votes"] == 6
    assert report["per_pair"]["A vs B"] == {"a": "A", "b": "B", "votes": 6, "A": 5, "B": 0, "tie": 1, "both_bad": 0}
    assert report["per_rater"]["ann"]["votes"] == 6
    assert report["agreement"]["pairs_rated_by_several"] == 6
    assert report["agreement"]["agreement"] == pytest.approx(14 / 18)  # cy's two ties disagree with ann and ben
    assert report["reasons"]["A"]["won"]["motion"] == 4 and report["reasons"]["C"]["lost"]["motion"] == 4
    per_system = report["metrics"]["per_system"]
    assert all(per_system[s]["videos"] == 2 and per_system[s]["feature_consistency"] > 0 for s in "ABC")
    # A's square moves slowest, C's fastest: the motion metric orders them opposite to the raters
    assert per_system["A"]["motion"] < per_system["B"]["motion"] < per_system["C"]["motion"]
    assert report["metrics"]["kendall_tau"]["motion"]["tau"] == pytest.approx(-1.0)
    out = study.root / "report"
    markdown = (out / "report.md").read_text()
    listed = markdown.split("## Every vote")[1].splitlines()
    assert sum(line.startswith("| ") and line[2].isdigit() for line in listed) == 18  # every vote listed
    assert "200 rounds" in markdown and "τ = -1.00" in markdown
    assert (out / "ratings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((study.root / "metrics").glob("*.json"))) == 6  # cached per video for the next report
