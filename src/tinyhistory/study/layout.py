"""The study folder: systems' videos over the same storyboards and seeds, registered by content hash.

    STUDY/
      study.json                        systems, storyboards, seeds and every registered video (id: content hash)
      storyboards/NAME.json             the storyboards, copied (the study never reads the originals again)
      history/FILE                      the video every generated video continues (``--history``), if any
      videos/SYSTEM/NAME.seedS.mp4      one video per system, storyboard and seed, with `tinyhistory generate`'s
                                        companions (``.png``, ``.segments.jsonl``, ``.session``) where it made them
      votes.jsonl                       one line per vote, appended by ``study serve``
      report/                           ``study report``'s output

A system is a ``tinyhistory generate`` output folder (its videos are copied in: the server only ever serves files
inside the study) or a checkpoint (what is missing is generated with the ordinary ``generate`` path, resumable: a
rerun of ``study new`` continues an interrupted video from its ``.session``). Videos are registered by the sha256 of
their bytes; the page names them by that id only, so a request can never name a path.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tinyhistory.hashing import file_sha256
from tinyhistory.study import StudyError

if TYPE_CHECKING:  # the storyboard module pulls in the text encoders (seconds): imported where used
    from tinyhistory.text.storyboard import Storyboard

STUDY_FILE = "study.json"
VOTES_FILE = "votes.jsonl"
FORMAT = "tinyhistory-study/1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe as a folder name and in a URL-free page
ID_RE = re.compile(r"^[0-9a-f]{16}$")
COMPANIONS = (".png", ".segments.jsonl", ".session")  # what `tinyhistory generate` writes beside OUT.mp4


@dataclass(frozen=True)
class Video:
    """One registered video: ``id`` is the first 16 hex digits of its sha256 (what the page knows it by)."""

    id: str
    system: str
    storyboard: str
    seed: int
    file: str  # relative to the study folder, POSIX separators
    sha256: str


@dataclass
class Study:
    """A study folder's ``study.json``, validated (every path inside the folder)."""

    root: Path
    seeds: list[int]
    salt: str  # per-study secret for the pair tokens and the left/right draws
    systems: dict[str, dict] = field(default_factory=dict)  # name -> {"kind": "checkpoint"|"videos", "source"}
    storyboards: dict[str, dict] = field(default_factory=dict)  # name -> {"file", "sha256", "duration"}
    videos: dict[str, Video] = field(default_factory=dict)  # id -> video
    history: str | None = None  # relative path of the history video, if the study has one
    settings: dict = field(default_factory=dict)  # sampling flags for checkpoint systems (steps)

    # -- reading --------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, verify: bool = False) -> Study:
        """Read ``root/study.json``; every file it names must be inside ``root`` (``verify``: and hash as
        registered, which ``serve`` checks once at start)."""
        root = Path(root)
        path = root / STUDY_FILE
        if not path.is_file():
            raise StudyError(f"{root}: not a study folder (no {STUDY_FILE}; make one with `tinyhistory study new`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StudyError(f"{path}: invalid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StudyError(f"{path}: not a {FORMAT} file")
        try:
            study = cls(
                root=root,
                seeds=[int(s) for s in data["seeds"]],
                salt=str(data["salt"]),
                systems=dict(data["systems"]),
                storyboards=dict(data["storyboards"]),
                videos={k: Video(**v) for k, v in data["videos"].items()},
                history=data.get("history"),
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StudyError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None
        for name, entry in study.storyboards.items():
            study.inside(entry["file"], f"storyboard {name}")
        if study.history is not None:
            study.inside(study.history, "the history video")
        for vid, video in study.videos.items():
            if not ID_RE.match(vid) or video.id != vid or not video.sha256.startswith(vid):
                raise StudyError(f"{path}: video id {vid!r} is not the start of its sha256")
            if video.system not in study.systems or video.storyboard not in study.storyboards:
                raise StudyError(f"{path}: video {vid} names an unknown system or storyboard")
            file = study.inside(video.file, f"video {vid} ({video.system}, {video.storyboard})")
            if not file.is_file():
                raise StudyError(f"{path}: video {vid} ({video.system}, {video.storyboard}): {video.file} is missing")
            if verify and file_sha256(file) != video.sha256:
                raise StudyError(f"{file}: its bytes changed since it was registered (sha256 differs)")
        return study

    def inside(self, relative: str, what: str) -> Path:
        """``root / relative``, refused (one line) unless it stays inside the study folder after symlinks."""
        rel = Path(relative)
        root = self.root.resolve()
        target = (root / rel).resolve()
        if rel.is_absolute() or ".." in rel.parts or not target.is_relative_to(root):
            raise StudyError(f"{self.root / STUDY_FILE}: {what}: path {relative!r} is outside the study folder")
        return target

    def path_of(self, video_id: str) -> Path:
        """The file of a registered video (``KeyError`` for an unknown id: the server answers 404)."""
        video = self.videos[video_id]
        return self.inside(video.file, f"video {video_id}")

    def video_for(self, system: str, storyboard: str, seed: int) -> Video | None:
        for video in self.videos.values():
            if (video.system, video.storyboard, video.seed) == (system, storyboard, seed):
                return video
        return None

    def storyboard(self, name: str) -> Storyboard:
        from tinyhistory.text.storyboard import Storyboard

        return Storyboard.load(self.inside(self.storyboards[name]["file"], f"storyboard {name}"))

    def storyboard_dict(self, name: str) -> dict:
        """The study's copy as JSON (written normalised by ``study new``; the page shows it as is)."""
        return json.loads(self.inside(self.storyboards[name]["file"], f"storyboard {name}").read_text("utf-8"))

    def slots(self) -> list[tuple[str, str, int]]:
        """Every (system, storyboard, seed) the study needs a video for."""
        return [(s, b, seed) for s in self.systems for b in self.storyboards for seed in self.seeds]

    def missing(self) -> list[tuple[str, str, int]]:
        return [slot for slot in self.slots() if self.video_for(*slot) is None]

    def require_complete(self) -> None:
        """Raise unless every system has a video for every storyboard and seed (what fair pairs need)."""
        missing = self.missing()
        if missing:
            system, story, seed = missing[0]
            raise StudyError(
                f"{self.root}: {len(missing)} videos missing, e.g. system {system}, storyboard {story}, seed {seed} "
                "(rerun `tinyhistory study new` with the same arguments to finish it)"
            )

    # -- writing --------------------------------------------------------------------------------------------------
    def save(self) -> None:
        """Write ``study.json`` atomically (a crash leaves the old or the new file, never half of one)."""
        data = {
            "format": FORMAT,
            "seeds": self.seeds,
            "salt": self.salt,
            "systems": self.systems,
            "storyboards": self.storyboards,
            "history": self.history,
            "settings": self.settings,
            "videos": {k: asdict(v) for k, v in sorted(self.videos.items())},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (STUDY_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.root / STUDY_FILE)

    def register(self, system: str, storyboard: str, seed: int, path: Path) -> Video:
        """Register ``path`` (inside the study) for a slot by its content hash and save ``study.json``."""
        sha = file_sha256(path)
        vid = sha[:16]
        other = self.videos.get(vid)
        if other is not None and (other.system, other.storyboard, other.seed) != (system, storyboard, seed):
            raise StudyError(
                f"system {system}: {path.name} is byte-identical to system {other.system}'s video for "
                f"{other.storyboard} (the same videos given twice?); a blind comparison of the same file means nothing"
            )
        relative = path.resolve().relative_to(self.root.resolve()).as_posix()
        video = Video(vid, system, storyboard, seed, relative, sha)
        self.videos = {k: v for k, v in self.videos.items() if (v.system, v.storyboard, v.seed) != video_slot(video)}
        self.videos[vid] = video
        self.save()
        return video


def video_slot(video: Video) -> tuple[str, str, int]:
    return video.system, video.storyboard, video.seed


# -- systems and their videos -------------------------------------------------------------------------------------
def parse_system(text: str) -> tuple[str, str]:
    """``NAME=RUN_OR_FOLDER`` → (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise StudyError(f"--system {text!r}: expected NAME=RUN_OR_FOLDER (e.g. proposed=runs/ar/final)")
    if not NAME_RE.match(name):
        raise StudyError(f"--system {text!r}: a name is 1-64 letters, digits, '_', '.' or '-' (starting alphanumeric)")
    return name, path


def classify(name: str, path: str) -> tuple[str, Path]:
    """("checkpoint", folder) for a stage-II checkpoint (or a run folder with ``final/``), ("videos", folder) for a
    folder of ``tinyhistory generate`` outputs."""
    from tinyhistory.paths import resolve_path

    folder = resolve_path(path)
    if not folder.exists():
        raise StudyError(f"system {name}: {path}: no such file or folder")
    if not folder.is_dir():
        raise StudyError(
            f"system {name}: {path} is a file; give a `tinyhistory generate` output folder or a checkpoint"
        )
    if (folder / "config.json").is_file():
        return "checkpoint", folder.resolve()
    if (folder / "final" / "config.json").is_file():
        return "checkpoint", (folder / "final").resolve()
    if not list_videos(folder):
        raise StudyError(
            f"system {name}: {path} holds no videos (*.mp4) and is not a checkpoint (no config.json): "
            "give the folder `tinyhistory generate --out` wrote into, or a checkpoint to generate from"
        )
    return "videos", folder.resolve()


def list_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.mp4") if p.is_file() and not p.name.endswith(".previous.mp4"))


def video_name(storyboard: str, seed: int) -> str:
    return f"{storyboard}.seed{seed}.mp4"


def find_folder_video(system: str, folder: Path, storyboard: str, seed: int, single_seed: bool) -> Path:
    """``FOLDER/NAME.seedS.mp4`` (or ``FOLDER/NAME.mp4`` when the study has one seed)."""
    names = [video_name(storyboard, seed)] + ([f"{storyboard}.mp4"] if single_seed else [])
    for candidate in names:
        if (folder / candidate).is_file():
            return folder / candidate
    raise StudyError(
        f"system {system}: {folder} has no video for storyboard {storyboard} seed {seed} "
        f"(expected {' or '.join(names)}; it holds {', '.join(p.name for p in list_videos(folder)[:5])})"
    )


def video_seconds(path: Path) -> tuple[float, float]:
    """(seconds of video, fps): frames counted by decoding (a growing mp4's header may carry no count)."""
    from tinyhistory.data.video import count_video_frames, probe_video

    try:
        info = probe_video(path)
        if not info.fps:
            raise ValueError(f"{path}: the video stream gives no frame rate")
        return count_video_frames(path, info.fps) / info.fps, info.fps
    except (ValueError, FileNotFoundError) as exc:
        raise StudyError(str(exc)) from None


def check_video(system: str, path: Path, story: Storyboard, story_name: str, seed: int) -> None:
    """Refuse a video that cannot be a ``generate`` output of ``story`` with ``seed``: shorter than the storyboard,
    a segment log whose prompts or segment count say another storyboard, a session saved with another seed."""
    seconds, fps = video_seconds(path)
    if seconds + 0.5 / fps < story.duration:
        raise StudyError(
            f"system {system}: {path} holds {seconds:g} s of video, shorter than storyboard {story_name} "
            f"({story.duration:g} s)"
        )
    log = path.with_name(path.name + ".segments.jsonl")
    if log.is_file():
        records = []
        for number, line in enumerate(log.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
                records.append((number, float(record["start_s"]), int(record["pixel_frames"]), str(record["prompt"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise StudyError(f"system {system}: {log} line {number} is not a segment record") from None
        for number, start, frames, prompt in records:
            expected = story.prompt_for(start, start + frames / fps)
            if prompt != expected:
                raise StudyError(
                    f"system {system}: {path.name} was generated from another storyboard than {story_name} "
                    f"({log.name} line {number}: the segment at {start:g} s has prompt {prompt!r}, the storyboard "
                    f"says {expected!r})"
                )
        if records:
            length = records[0][2] / fps
            wanted = math.ceil(story.duration / length - 1e-9)
            if len(records) != wanted:
                raise StudyError(
                    f"system {system}: {path.name} has {len(records)} segments of {length:g} s; storyboard "
                    f"{story_name} ({story.duration:g} s) makes {wanted}: generated from another storyboard"
                )
    session = path.with_name(path.name + ".session")
    if session.is_file():
        from tinyhistory.generate.session import session_meta

        try:
            made = session_meta(session)["settings"].get("seed")
        except (ValueError, KeyError, TypeError):
            made = None
        if made is not None and made != seed:
            raise StudyError(
                f"system {system}: {path.name} was generated with seed {made}, the study wants seed {seed}"
            )


# -- study new ----------------------------------------------------------------------------------------------------
GenerateFn = Callable[..., dict]


def create_study(
    out: str | Path,
    systems: list[str],
    storyboards: list[str],
    seeds: list[int] = (0,),
    history: str | None = None,
    steps: int | None = None,
    progress: bool = True,
    generate_fn: GenerateFn | None = None,
) -> Study:
    """Make or complete the study at ``out``: copy the folder systems' videos in, generate what the checkpoint
    systems lack (``generate_fn``: default :func:`tinyhistory.generate.run.generate`), register every video.

    Everything given is checked before anything is written, so a bad input leaves the study as it was; each
    finished video is registered at once, so an interrupted run continues where it stopped."""
    root = Path(out)
    seeds = sorted(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise StudyError("give at least one --seed")
    parsed = [parse_system(s) for s in systems]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise StudyError(f"--system: the name {next(n for n in names if names.count(n) > 1)!r} is given twice")
    stories = load_storyboards(storyboards)

    if root.exists() and not root.is_dir():
        raise StudyError(f"--out {root} is a file; give a folder for the study")
    existing = Study.load(root) if (root / STUDY_FILE).exists() else None
    if existing is None and root.exists() and any(root.iterdir()):
        raise StudyError(f"--out {root}: the folder exists and is not a study; give a new or empty folder")
    study = existing or Study(root=root, seeds=seeds, salt=secrets.token_hex(16))
    if existing is not None and existing.seeds != seeds:
        raise StudyError(f"{root} was made with --seed {existing.seeds}; --seed {seeds} differs (make a new study)")
    for name, (path, _, digest) in stories.items():
        known = study.storyboards.get(name)
        if known is not None and known["sha256"] != digest:
            raise StudyError(
                f"storyboard {name}: {path} differs from the study's copy {root / known['file']} (same name, other "
                "shots): rename it, or make a new study"
            )
    kinds: dict[str, tuple[str, Path]] = {}
    for name, path in parsed:
        kind, folder = classify(name, path)
        known = study.systems.get(name)
        if known is not None and Path(known["source"]) != folder:
            raise StudyError(f"system {name}: the study has it from {known['source']}, not {folder}")
        kinds[name] = (kind, folder)
    for name, entry in study.systems.items():
        kinds.setdefault(name, (entry["kind"], Path(entry["source"])))
    if len(kinds) < 2:
        raise StudyError("a study compares at least two systems: give another --system NAME=RUN_OR_FOLDER")
    history_path = _check_history(study, history)
    if history_path is not None and study.history is None and _any_generated(study):
        raise StudyError(f"--history {history}: {root}'s videos were generated without a history (make a new study)")
    if steps is not None and study.settings.get("steps") not in (None, steps) and _any_generated(study):
        raise StudyError(f"{root}: its videos were generated with --steps {study.settings['steps']}, not {steps}")

    # Validate every folder system's videos before writing anything.
    all_stories = {n: (None, study.storyboard(n), e["sha256"]) for n, e in study.storyboards.items()}
    all_stories.update(stories)
    copies = []
    for name, (kind, folder) in kinds.items():
        if kind != "videos":
            continue
        for story_name, (_, story, _) in all_stories.items():
            for seed in seeds:
                if study.video_for(name, story_name, seed) is not None:
                    continue
                video = find_folder_video(name, folder, story_name, seed, len(seeds) == 1)
                check_video(name, video, story, story_name, seed)
                copies.append((name, story_name, seed, video))
    hashes = {v.sha256: (v.system, v.storyboard) for v in study.videos.values()}
    for name, story_name, _, video in copies:  # the same file twice would be a blind comparison of nothing
        first = hashes.setdefault(file_sha256(video), (name, story_name))
        if first != (name, story_name):
            raise StudyError(
                f"system {name}: {video} is byte-identical to system {first[0]}'s video for {first[1]} (the same "
                "videos given twice?); a blind comparison of the same file means nothing"
            )

    # Write: storyboards, history, systems, copied videos; then generate.
    (root / "storyboards").mkdir(parents=True, exist_ok=True)
    for name, (_, story, digest) in stories.items():
        if name not in study.storyboards:
            target = root / "storyboards" / f"{name}.json"
            target.write_text(json.dumps(story.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            study.storyboards[name] = {"file": f"storyboards/{name}.json", "sha256": digest, "duration": story.duration}
    if history_path is not None and study.history is None:
        (root / "history").mkdir(exist_ok=True)
        shutil.copyfile(history_path, root / "history" / history_path.name)
        study.history = f"history/{history_path.name}"
    if steps is not None:
        study.settings["steps"] = steps
    for name, (kind, folder) in kinds.items():
        study.systems[name] = {"kind": kind, "source": str(folder)}
    study.save()
    for name, story_name, seed, video in copies:
        target = root / "videos" / name / video_name(story_name, seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("",) + COMPANIONS:
            source = video.with_name(video.name + suffix)
            if source.is_file():
                shutil.copyfile(source, target.with_name(target.name + suffix))
        study.register(name, story_name, seed, target)
        print(f"[study] {name}: {story_name} seed {seed} <- {video}")
    _generate_missing(study, kinds, progress, generate_fn)
    study.require_complete()
    return study


def load_storyboards(paths: list[str]) -> dict[str, tuple[Path, Storyboard, str]]:
    """name (the file's stem) -> (path, storyboard, sha256 of its canonical JSON)."""
    from tinyhistory.paths import resolve_path
    from tinyhistory.text.storyboard import Storyboard

    if not paths:
        raise StudyError("give at least one --storyboard")
    out: dict[str, tuple[Path, Storyboard, str]] = {}
    for given in paths:
        path = resolve_path(given)
        try:
            story = Storyboard.load(path)
        except FileNotFoundError as exc:
            raise StudyError(str(exc)) from None
        name = path.name.removesuffix(".json")
        if not NAME_RE.match(name):
            raise StudyError(f"--storyboard {given}: rename it to letters, digits, '_', '.' or '-' (it names files)")
        if name in out:
            raise StudyError(f"--storyboard: two storyboards are called {name} ({out[name][0]} and {path})")
        canonical = json.dumps(story.to_dict(), sort_keys=True).encode()
        out[name] = (path, story, hashlib.sha256(canonical).hexdigest())
    return out


def _check_history(study: Study, history: str | None) -> Path | None:
    if history is None:
        return None
    from tinyhistory.paths import resolve_path

    path = resolve_path(history)
    if not path.is_file():
        raise StudyError(f"--history {history}: file not found")
    if study.history is not None and file_sha256(path) != file_sha256(study.inside(study.history, "history")):
        raise StudyError(f"--history {history}: the study continues {study.history}, another video")
    return path


def _any_generated(study: Study) -> bool:
    return any(study.systems[v.system]["kind"] == "checkpoint" for v in study.videos.values())


def _generate_missing(study: Study, kinds: dict, progress: bool, generate_fn: GenerateFn | None) -> None:
    """Generate each missing video of the checkpoint systems with ``tinyhistory generate``'s function, continuing
    an interrupted one from its ``.session``; register each as soon as it is complete."""
    todo = [s for s in study.missing() if kinds[s[0]][0] == "checkpoint"]
    if not todo:
        return
    if generate_fn is None:
        from tinyhistory.generate.run import generate as generate_fn
    from tinyhistory.text.storyboard import Storyboard

    history = study.inside(study.history, "history") if study.history else None
    for number, (name, story_name, seed) in enumerate(todo, 1):
        story_file = study.inside(study.storyboards[story_name]["file"], f"storyboard {story_name}")
        story = Storyboard.load(story_file)
        out = study.root / "videos" / name / video_name(story_name, seed)
        session = out.with_name(out.name + ".session")
        done = out.is_file() and video_seconds(out)[0] + 1e-6 >= story.duration
        what = "complete already" if done else ("continuing" if session.is_file() else "generating")
        print(f"[study] {name}: {what} {story_name} seed {seed} ({number} of {len(todo)})", flush=True)
        if not done:
            settings = {"seed": seed, "steps": study.settings.get("steps")}
            common = dict(settings=settings, progress=progress)
            checkpoint = kinds[name][1]
            if session.is_file():
                generate_fn(checkpoint, story_file, out, resume=session, **common)
            else:  # nothing to continue: a fresh run (replacing what an interrupted start may have left)
                out.parent.mkdir(parents=True, exist_ok=True)
                generate_fn(checkpoint, story_file, out, history=history, overwrite=True, **common)
        check_video(name, out, story, story_name, seed)
        study.register(name, story_name, seed, out)
