"""`facegen export`: write RUN/model/ from a checkpoint, as the end of training would.

    export_checkpoint("runs/tiny32")                          # the latest checkpoint
    export_checkpoint("runs/tiny32", checkpoint="step-000004")

A run stopped before its last step (Ctrl-C, a kill, a lost machine) has checkpoints but no
model/, and sampling, evaluation and serving load only model/ (STYLE G7). This rebuilds the
family's nets from RUN/config.yaml (with the changes earlier resumes recorded), loads the
checkpoint's raw weights (nets/<net>.safetensors, buffers included), copies its EMA weights
in (ema/<net>.pt: diffusers EMAModel state, shadow_params in the order of net.parameters(),
what `Loop.ema_view` swaps in with EMAModel.copy_to), and calls the family's export into
RUN/model/ atomically: the very folder training writes at its end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facegen.utils import FacegenError, atomic_dir


def export_checkpoint(run: str | Path, checkpoint: str | None = None, overwrite: bool = False,
                      device: str | None = None) -> dict:
    """Export checkpoint `checkpoint` (a folder name under RUN/checkpoints, "step-N" or N; None:
    the latest) of `run` into RUN/model/. Returns {"model", "checkpoint", "step"}."""
    import torch

    from facegen.checkpoint import read_state
    from facegen.families import get_family
    from facegen.sample import EXPORT_META

    run = Path(run)
    folder = find_checkpoint(run, checkpoint)
    final = run / "model"
    if (final / EXPORT_META).is_file() and not overwrite:
        raise FacegenError(f"{final} already holds an exported model; pass --overwrite to replace it with {folder.name}")
    cfg = run_config(run, read_state(folder)["step"])
    family = get_family(cfg["family"])
    torch.manual_seed(cfg["seed"])  # as train() builds (every weight is then replaced by the checkpoint's)
    # Export needs the nets, not the training data: skip a latent cache a build would (re)compute.
    build_cfg = {**cfg, "model": {**cfg["model"], "cache_latents": False}} if "cache_latents" in cfg["model"] else cfg
    built = family.build(build_cfg, cfg["resolution"])
    load_ema_weights(folder, built)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    for net in [*built.nets.values(), *built.frozen.values()]:
        net.to(device)
    with atomic_dir(final, overwrite=True) as tmp:
        family.export(built, cfg, tmp)
    return {"model": final, "checkpoint": folder, "step": read_state(folder)["step"]}


def find_checkpoint(run: Path, name: str | None) -> Path:
    """The checkpoint folder named (by folder name, "step-N" or N, matched on its stored step), or the latest."""
    from facegen.checkpoint import list_checkpoints

    if not run.is_dir():
        raise FacegenError(f"{run}: no such run folder; give a run folder written by `facegen train`")
    found = list_checkpoints(run / "checkpoints")
    if not found:
        raise FacegenError(f"{run} has no checkpoint to export ({run / 'checkpoints'} holds none); "
                           f"train it with `facegen train ... --out {run}` first")
    if name is None:
        return found[-1][1]
    for step, folder in found:
        if folder.name == name:
            return folder
    text = name.removeprefix("step-").lstrip("0") or "0"
    for step, folder in found:
        if text.isdigit() and step == int(text):
            return folder
    raise FacegenError(f"--checkpoint {name}: {run / 'checkpoints'} has no such checkpoint; "
                       f"it has {', '.join(folder.name for _, folder in found)}")


def run_config(run: Path, step: int) -> dict:
    """The config the run trained with up to `step`: config.yaml, then the changes of the resumes
    that started before it (run_checks.resume_history), as `facegen train --resume` resolves it."""
    from facegen.config import load_config, read_run_config
    from facegen.run_checks import resume_history

    if not (run / "config.yaml").is_file():
        raise FacegenError(f"{run / 'config.yaml'} is missing: {run} is not a training run; give the folder `facegen train --out` wrote")
    saved = read_run_config(run)
    earlier = [f"{key}={json.dumps(after)}" for row in resume_history(run) if row["step"] < step
               for key, (_, after) in row["changed"].items()]
    return load_config(saved, earlier)


def load_ema_weights(folder: Path, built) -> None:
    """The checkpoint's weights into `built.nets`: the raw ones (buffers too), then the EMA
    weights over the parameters of the nets that have one (built.ema), as the loop exports."""
    import torch
    from safetensors.torch import load_model

    for name, net in built.nets.items():
        path = folder / "nets" / f"{name}.safetensors"
        if not path.is_file():
            raise FacegenError(f"{folder} lacks {path.name} for net {name!r}: not a checkpoint of this run's config")
        try:
            load_model(net, str(path))
        except RuntimeError as e:  # other shapes or names: the config does not describe these weights
            raise FacegenError(f"{path} does not fit the net RUN/config.yaml builds ({str(e).splitlines()[0]})") from None
    for name in built.ema:
        path = folder / "ema" / f"{name}.pt"
        if not path.is_file():
            print(f"warning: {folder} holds no EMA weights for {name} ({path.name}); exporting its raw weights", file=sys.stderr)
            continue
        shadow = torch.load(path, map_location="cpu", weights_only=True)["shadow_params"]
        params = list(built.nets[name].parameters())
        if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params)):
            raise FacegenError(f"{path} holds {len(shadow)} EMA tensors that do not match the {len(params)} parameters of {name}")
        with torch.no_grad():
            for s, p in zip(shadow, params):
                p.copy_(s.to(p.dtype))
