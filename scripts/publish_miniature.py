"""Copy the miniature protocol's runs (scripts/train_miniature.sh) into the committed demo checkpoints.

    python scripts/publish_miniature.py codec RUNS/codec                # → checkpoints/miniature/codec
    python scripts/publish_miniature.py base RUNS/base                  # → checkpoints/miniature/base (fp16)
    python scripts/publish_miniature.py run RUNS/stage1/proposed proposed
    python scripts/publish_miniature.py run RUNS/stage2/proposed stage2/proposed

Why a script and not `cp -r`: a checkpoint's config.json names the folders it was trained with (``model.path``: the
base, ``codec.path``: the codec, ``data.cache``), and those are the run folders (ignored by git). Publishing points
them at the committed copies, so `load_model(checkpoints/miniature/proposed)` finds its base and codec on a clean
clone. The base DiT is written in fp16 (half the bytes; the 40-MB budget for all demo weights) by the project's own
``save_weights``; the LoRA runs already wrote fp16 (`--save-dtype fp16`). The codec is copied as trained (fp32). The
runs' ComfyUI-layout LoRA copies are not published (the same weights in another layout; the budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from tinyhistory.paths import PROJECT_ROOT
from tinyhistory.train.checkpoint import load_model, save_weights

DEST = PROJECT_ROOT / "checkpoints" / "miniature"
CODEC_FILES = ("config.json", "codec.safetensors", "metrics.json", "log.jsonl", "settings.json")


def _relative(path: Path) -> str:
    return str(path.resolve().relative_to(PROJECT_ROOT))


def _point_at_published(config_file: Path) -> None:
    """Rewrite a checkpoint config's folders to the committed ones."""
    data = json.loads(config_file.read_text())
    if data["model"]["path"]:  # a LoRA run's frozen base (the base itself names none)
        data["model"]["path"] = _relative(DEST / "base")
    data["codec"]["path"] = _relative(DEST / "codec")
    data["data"]["cache"] = ""
    config_file.write_text(json.dumps(data, indent=2) + "\n")


def publish_codec(run: Path) -> Path:
    out = DEST / "codec"
    out.mkdir(parents=True, exist_ok=True)
    for name in CODEC_FILES:
        shutil.copy2(run / name, out / name)
    return out


def publish_base(run: Path) -> Path:
    out = DEST / "base"
    model, cfg = load_model(run / "final")
    shutil.rmtree(out, ignore_errors=True)
    save_weights(model, cfg, out, dtype=torch.float16)
    _point_at_published(out / "config.json")
    shutil.copy2(run / "train_log.jsonl", out / "train_log.jsonl")
    return out


def publish_run(run: Path, name: str) -> Path:
    out = DEST / name
    shutil.rmtree(out, ignore_errors=True)
    # the ComfyUI-layout copy of each LoRA is left out (the same weights again: 1.6 MB a model, 40 MB budget)
    shutil.copytree(run / "final", out, ignore=shutil.ignore_patterns("state", "lora_wan_comfyui.safetensors"))
    _point_at_published(out / "config.json")
    shutil.copy2(run / "train_log.jsonl", out / "train_log.jsonl")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["codec", "base", "run"])
    parser.add_argument("run", type=Path, help="the run folder")
    parser.add_argument("name", nargs="?", help="for `run`: the folder under checkpoints/miniature")
    args = parser.parse_args()
    if args.what == "run" and not args.name:
        parser.error("`run` needs the destination name (e.g. proposed, stage2/window)")
    out = {"codec": lambda: publish_codec(args.run), "base": lambda: publish_base(args.run)}.get(
        args.what, lambda: publish_run(args.run, args.name)
    )()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
