"""Sampler settings, measured on fixed weights: KID (and FID at equal counts) of one diffusion
run sampled under several settings, on the same seeds, against the same held-out faces.

    # DDIM step spacing (docs/training.md): diffusers' default "leading" against "trailing"
    python scripts/sampling_ablation.py runs/tiny32 --ref stores/celeba32 --n 1000 \
        --out docs/results/ddim-spacing.json \
        spacing=leading,steps=10 spacing=trailing,steps=10 spacing=leading,steps=25 \
        spacing=trailing,steps=25 spacing=leading,steps=50 spacing=trailing,steps=50

    # Latent clamping (docs/latent-diffusion.md): clip_sample on (the old ldm) against off
    python scripts/sampling_ablation.py runs/ldm64 --ref stores/utk64 --n 1000 \
        --out docs/results/ldm-clip.json --grids docs/images/ldm-clip clip=1,spacing=leading clip=1 clip=0

A setting is comma-separated key=value: steps (default: the model's), spacing (DDIM
timestep_spacing, default facegen's "trailing"), clip (clip_sample 1/0, default the model's).
Only the setting differs between rows: weights, x_T and the evaluation are shared; clip_sample
acts in the sampler's step() only, never in training, so one trained run serves every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from facegen import sample
from facegen.data.store import FaceStore
from facegen.metrics.inception import extract_features, store_features
from facegen.metrics.registry import measure
from facegen.utils import atomic_write_json, make_grid, save_png


def parse_setting(text: str) -> dict:
    setting = dict(part.split("=", 1) for part in text.split(","))
    unknown = set(setting) - {"steps", "spacing", "clip"}
    if unknown:
        raise SystemExit(f"unknown setting key(s) {', '.join(sorted(unknown))} in {text!r}; use steps, spacing, clip")
    return setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a diffusion run (or its model/ folder)")
    parser.add_argument("settings", nargs="+", help="e.g. spacing=leading,steps=25 or clip=0")
    parser.add_argument("--ref", required=True, help="the store whose holdout is the reference")
    parser.add_argument("--n", type=int, default=1000, help="samples per setting and holdout faces")
    parser.add_argument("--out", required=True)
    parser.add_argument("--grids", help="also write FOLDER/<setting>.png: seeds 0-15 of each setting, side by side comparable")
    args = parser.parse_args()

    generator = sample.load_generator(args.run, "cpu")
    model_config = dict(generator.scheduler_config)
    family_options = dict(generator.scheduler_options)
    store = FaceStore(args.ref)
    reference = store_features(store, "holdout", args.n, spread=True)
    seeds = list(range(args.n))
    rows = []
    for text in args.settings:
        setting = parse_setting(text)
        clip = bool(int(setting["clip"])) if "clip" in setting else family_options.get("clip_sample", model_config.get("clip_sample", True))
        # clamping goes in the family's options: a latent family forces clip_sample off there, over the config
        generator.scheduler_options = {**family_options, "timestep_spacing": setting.get("spacing", "trailing"), "clip_sample": clip}
        steps = int(setting.get("steps", generator.default_steps))
        started = time.perf_counter()
        images = sample.generate(generator, seeds, batch_size=50, sampler="ddim", steps=steps)
        if args.grids:
            grid = Path(args.grids) / (text.replace("=", "-").replace(",", "_") + ".png")
            save_png(grid, make_grid(images[:16], nrow=8))
            row_grid = grid.as_posix()
        features = extract_features(images, progress=False)
        # the one metric registry (facegen eval's KID and FID); FID without its bootstrap interval here
        scores = measure(["kid", "fid"], features, reference, fid={"bootstrap_rounds": 0})
        row = {"setting": text, "steps": steps, "spacing": setting.get("spacing", "trailing"), "clip_sample": clip,
               "kid": scores["kid"]["value"], "kid_std": scores["kid"]["std"], "fid": scores["fid"]["value"],
               "protocol": {name: {k: v for k, v in entry.items() if k not in ("value", "std")} for name, entry in scores.items()},
               "seconds": round(time.perf_counter() - started, 1)}
        if args.grids:
            row["grid"] = row_grid
        rows.append(row)
        print(json.dumps(row), flush=True)
    model = sample.model_dir(args.run)
    info = json.loads((model / "facegen.json").read_text())
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "run": Path(args.run).as_posix(), "model": info.get("name"), "family": info.get("family"),
        "store": store.content_hash, "n_generated": args.n, "n_reference": len(reference),
        "reference": "holdout, evenly spaced rows", "seeds": f"0-{args.n - 1}", "sampler": "ddim", "eta": 0.0,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
