"""How far the meta-device traces of ``tinyhistory.sizing.memory`` are from real allocations, checked on the CPU.

    python benchmarks/memory_trace_check.py          # about a minute on 2 cores; prints one JSON line per check

Why this exists: ``tinyhistory plan`` predicts generation's working sets by tracing the project's code on meta tensors
(:class:`tinyhistory.sizing.memory.LiveBytes`). Until a GPU is lent, the only real allocations to compare with are the
CPU's: each check runs the same code on real tensors in a fresh process and reads how much the process's peak resident
memory grew (``ru_maxrss`` over the RSS before). That growth also holds what a trace cannot see — glibc keeping freed
memory, oneDNN workspaces, thread buffers — so it is an upper bound on what the code allocated, and the ratio says how
much slack a prediction needs. On a GPU, ``benchmarks/gpu_history_cost.py`` makes the same comparison against
``torch.cuda.max_memory_allocated``.

Checks (random weights, real layer widths, small frames so a 2-core CPU finishes):

* the VAE's streaming decode (``WanStreamDecoder``, first push of one latent frame, then a segment of two) of the
  Wan 2.1 and Wan 2.2 VAEs at 192×320;
* one guided step (batch 2) of a 2-block Wan 2.1-1.3B-width DiT on 3,640 context + 1,560 target tokens, without and
  with the history KV cache.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_growth(fn) -> int:
    """Bytes the process's peak RSS grew by while ``fn`` ran (0 if it stayed under an earlier peak)."""
    import gc

    gc.collect()
    before = max(_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    fn()
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)


def check_vae(name: str, height: int, width: int, latents: int) -> dict:
    from diffusers import AutoencoderKLWan

    from tinyhistory.codecs.wan import WanVAECodec
    from tinyhistory.sizing.memory import decode_trace

    config = WanVAECodec.released[name]
    trace = decode_trace(WanVAECodec, config, latents, height, width)
    z = int(config.get("z_dim", 16))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**{**config, "latents_mean": [0.0] * z, "latents_std": [1.0] * z}).eval()
    codec = WanVAECodec(vae)
    s = codec.spatial_factor
    x = torch.randn(1, z, latents, height // s, width // s)
    decoder = codec.stream_decoder()

    def run() -> None:
        with torch.no_grad():
            decoder.push(x[:, :, :1])
            decoder.push(x)

    grown = _peak_growth(run)
    predicted = trace.working + trace.cache
    return {"check": f"{name} decode {height}x{width}", "trace_mib": predicted >> 20, "rss_growth_mib": grown >> 20}


def check_dit(kv: bool) -> dict:
    from tinyhistory.backbones.base import ContextTokens
    from tinyhistory.backbones.wan import WanBackbone
    from tinyhistory.sizing.memory import dit_step_trace, meta_bf16_backbone
    from tinyhistory.sizing.models import get_config
    from tinyhistory.text.condition import TextCondition

    config = {**get_config("Wan2.1-T2V-1.3B"), "num_layers": 2}
    k, shape, batch = 3640, (16, 4, 30, 52), 2
    trace = dit_step_trace(WanBackbone, config, k, shape, kv)
    torch.manual_seed(0)
    meta = meta_bf16_backbone(WanBackbone, config)
    backbone = type(meta)(meta.transformer.to_empty(device="cpu"))
    for parameter in backbone.transformer.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    if kv:
        backbone.use_kv_cache()
    d = backbone.hidden_dim
    latents = torch.randn(batch, *shape).bfloat16()
    t = torch.rand(batch, dtype=torch.float64)
    text = TextCondition(torch.randn(batch, 512, config["text_dim"]))
    positions = torch.arange(shape[1])[None].expand(batch, shape[1])
    context = ContextTokens(torch.randn(batch, k, d).bfloat16(), torch.zeros(batch, k, 3, dtype=torch.long))

    def run() -> None:
        with torch.no_grad():
            if kv:
                cache = backbone.build_context_cache(context, text)
                backbone(latents, t, text, None, positions, context_cache=cache)
            else:
                backbone(latents, t, text, context, positions)

    grown = _peak_growth(run)
    predicted = trace.working + trace.kv_cache
    label = f"DiT step (1.3B width, 2 blocks), {k} + {shape[1] * 15 * 26} tokens, kv_cache={kv}"
    return {"check": label, "trace_mib": predicted >> 20, "rss_growth_mib": grown >> 20}


CHECKS = {
    "vae21": lambda: check_vae("wan2.1-1.3b", 192, 320, 2),  # the Wan 2.1 VAE (1.3B, 14B, A14B)
    "vae22": lambda: check_vae("wan2.2-ti2v-5b", 192, 320, 2),  # the Wan 2.2 VAE (TI2V-5B)
    "dit": lambda: check_dit(False),
    "dit_kv": lambda: check_dit(True),
}


def main() -> None:
    torch.set_num_threads(2)
    if len(sys.argv) == 2 and sys.argv[1] in CHECKS:  # one check per process: peak RSS never goes down
        row = CHECKS[sys.argv[1]]()
        row["rss_over_trace"] = round(row["rss_growth_mib"] / max(row["trace_mib"], 1), 2)
        print(json.dumps(row))
        return
    for name in CHECKS:
        subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main()
