"""One way to store a text condition (``TextCondition.to_tensors`` / ``from_tensors``), three file layouts.

Each layout keeps the tensor names, dtypes and metadata the code wrote before it was shared, so caches and shards
already on disk keep loading: the files below are written with safetensors directly, the way that code wrote them,
and read back through today's readers; and today's writers give exactly those names and dtypes.
"""

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tinyhistory.config import TextConfig
from tinyhistory.data.cache import CacheSampler, read_empty_prompt, write_empty_prompt
from tinyhistory.data.prepare import encode_prompts_of
from tinyhistory.text.cache import encode_prompts, prompt_key
from tinyhistory.text.condition import TextCondition
from tinyhistory.text.storyboard import Storyboard

L, D, P = 6, 4, 3  # tokens, state width, pooled width


def _condition(batch: int, seed: int = 0) -> TextCondition:
    """A HunyuanVideo-like condition: float32 states, an int64 mask, a float32 pooled vector."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(L) < torch.randint(1, L, (batch, 1), generator=g)).long()
    return TextCondition(torch.randn(batch, L, D, generator=g), mask, torch.randn(batch, P, generator=g))


class FakeEncoder:
    """Gives ``_condition`` per prompt list; counts calls (a cache hit must not encode)."""

    def __init__(self):
        self.calls = 0

    def encode_condition(self, prompts: list[str]) -> TextCondition:
        self.calls += 1
        return _condition(len(prompts), seed=len(prompts))


def _never():
    raise AssertionError("a cached condition must not load the encoder")


def _assert_same(a: TextCondition, b: TextCondition) -> None:
    torch.testing.assert_close(a.states, b.states)
    assert a.states.dtype == torch.float32
    for part in ("mask", "pooled"):
        x, y = getattr(a, part), getattr(b, part)
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y.to(x.dtype)) and x.dtype == y.dtype


def test_a_prompt_cache_of_the_old_layout_loads(tmp_path):
    """``text.cache``: states under the prompt's key, ``KEY.mask`` and ``KEY.pooled`` beside them, as stored."""
    text = TextConfig(kind="minilm", cache=str(tmp_path / "prompts.safetensors"))
    prompts = ["a red car", "a blue boat"]
    fresh = _condition(2)
    tensors = {}
    for i, prompt in enumerate(prompts):  # the writer of before
        key = prompt_key(text.kind, text.max_tokens, prompt, text.path)
        tensors[key] = fresh.states[i].contiguous()
        tensors[f"{key}.mask"] = fresh.mask[i].contiguous()
        tensors[f"{key}.pooled"] = fresh.pooled[i].contiguous()
    save_file(tensors, text.cache)
    _assert_same(encode_prompts(text, prompts, encoder=_never), fresh)
    assert encode_prompts(text, prompts[1:], encoder=_never).states.shape == (1, L, D)


def test_the_prompt_cache_writes_the_old_layout(tmp_path):
    text = TextConfig(kind="minilm", cache=str(tmp_path / "prompts.safetensors"))
    encoder = FakeEncoder()
    first = encode_prompts(text, ["b", "a"], encoder=lambda: encoder)
    stored = load_file(text.cache)
    key = {p: prompt_key(text.kind, text.max_tokens, p) for p in ("a", "b")}
    assert set(stored) == {f"{key[p]}{suffix}" for p in key for suffix in ("", ".mask", ".pooled")}
    assert stored[key["a"]].dtype == torch.float32 and stored[f"{key['a']}.mask"].dtype == torch.int64
    again = encode_prompts(text, ["b", "a"], encoder=_never)
    _assert_same(again, first)
    assert encoder.calls == 1


def test_an_empty_prompt_of_the_old_layout_loads_and_is_written_alike(tmp_path):
    """``empty_prompt.safetensors``: ``states``, ``mask``, ``pooled`` (float32 / as given / float32), the encoder's
    identity as metadata."""
    text = TextConfig(kind="hunyuan", max_tokens=L, path="/models/hv")
    empty = _condition(1)
    identity = {"kind": "hunyuan", "max_tokens": str(L), "path": "/models/hv"}
    save_file({"states": empty.states[0], "mask": empty.mask[0], "pooled": empty.pooled[0]},
              str(tmp_path / "empty_prompt.safetensors"), metadata=identity)  # fmt: skip
    _assert_same(read_empty_prompt(str(tmp_path), text), empty)
    assert read_empty_prompt(str(tmp_path), TextConfig(kind="hunyuan", max_tokens=L, path="/elsewhere")) is None

    out = tmp_path / "new"
    out.mkdir()
    write_empty_prompt(out, text, FakeEncoder)
    with safe_open(str(out / "empty_prompt.safetensors"), "pt") as f:
        assert f.metadata() == identity
        assert {k: f.get_tensor(k).dtype for k in f.keys()} == {
            "states": torch.float32,
            "mask": torch.int64,
            "pooled": torch.float32,
        }
    _assert_same(read_empty_prompt(str(out), text), FakeEncoder().encode_condition([""]))


def test_shard_prompts_of_the_old_layout_load_and_are_written_alike(tmp_path):
    """A ``data prepare`` shard's shots: ``text.{j}.{L}x{D}.float16``, ``text_mask.{j}.{L}.bool``,
    ``text_pooled.{j}.{P}.float16``; read back as float32 states, int64 mask, float32 pooled."""
    board = Storyboard.from_dict({"shots": [{"start": 0, "end": 1, "prompt": "one"}, {"start": 1, "end": 2,
                                 "prompt": "two"}]}, "board")  # fmt: skip
    shots = _condition(2)
    tensors = {"w0.hr_latents.2x8x2x2.float16": torch.zeros(2, 8, 2, 2, dtype=torch.float16)}
    for j in range(2):  # the writer of before
        tensors[f"text.{j}.{L}x{D}.float16"] = shots.states[j].to(torch.float16).contiguous()
        tensors[f"text_mask.{j}.{L}.bool"] = shots.mask[j].bool().contiguous()
        tensors[f"text_pooled.{j}.{P}.float16"] = shots.pooled[j].to(torch.float16).contiguous()
    metadata = {
        "source": "clip.mp4",
        "fps": "4.0",
        "frames": "8",
        "window_starts": "[0]",
        "temporal_factor": "1",
        "framewise": "true",
        "window_frames": "8",
        "storyboard": json.dumps(board.to_dict()),
        "config": json.dumps({"rates": []}),
    }
    (tmp_path / "shards").mkdir()
    save_file(tensors, str(tmp_path / "shards" / "old.safetensors"), metadata=metadata)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"shard": "shards/old.safetensors"}) + "\n")

    sampler = CacheSampler(tmp_path, 4, [], [], 0.0, "train")
    picks = torch.tensor([[0, 0], [0, 4]])  # frames 0–4 (0–1 s: shot 0) and 4–8 (1–2 s: shot 1)
    text = sampler.text_for(picks, 0, 4)
    expected = TextCondition(shots.states.half().float(), shots.mask, shots.pooled.half().float())
    _assert_same(text, expected)

    written = encode_prompts_of(board, FakeEncoder())
    assert {k: v.dtype for k, v in written.items()} == {k: v.dtype for k, v in tensors.items() if k.startswith("text")}
