"""The checks around a run, apart from the loop: which preset and store it was trained with,
what a resume may change, and advice when the device runs out of memory.

    cfg, changed = resume_config(out, saved, overrides)   # refuses a change to the model
    record_resume(out, step, changed)                      # RUN/resumes.jsonl

A resume continues the model the run defines. Keys that define the model or its objective
(`family`, `resolution`, every `model.*` and `ema.*`, the data order and flips: `seed`,
`hflip`) are refused on --resume with one line naming the key and the fix. Every other key
(steps, time_limit, lr, batch and cadences, eval_every, precision and kernels) may change: the
change is appended to RUN/resumes.jsonl with the step it starts at, and RUN/config.yaml keeps the
values the run started with. The config a resume trains with is config.yaml, then every recorded
change in order, then the new overrides.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from facegen.config import load_config
from facegen.data.store import FaceStore
from facegen.families import get_family
from facegen.utils import FacegenError

RESUMES = "resumes.jsonl"
MODEL_KEYS = ("family", "resolution", "model", "ema", "seed", "hflip")  # a key, or the prefix of a section


def preset_id(preset_or_yaml) -> str:
    """What a run records as its preset: the packaged name, or the YAML file's absolute path."""
    if isinstance(preset_or_yaml, dict):
        return "config"
    path = Path(preset_or_yaml)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") else str(preset_or_yaml)


def check_same_run(out: Path, saved: dict, preset_or_yaml, data) -> None:
    """--resume continues a run as it was trained: refuse another preset or another face store,
    naming both (the saved config would be used anyway, so a mismatch is a mistake)."""
    given = preset_id(preset_or_yaml)
    if saved.get("preset") is not None and saved["preset"] != given:
        raise FacegenError(f"{out} was trained with preset {saved['preset']}, not {given}; "
                           f"resume it with `facegen train {saved['preset']} ... --resume`, or train {given} into another --out")
    if saved.get("preset") is None and load_config(preset_or_yaml)["family"] != saved.get("family"):  # a run from before presets were recorded
        raise FacegenError(f"{out} was trained as family {saved.get('family')!r}, but {given} is family "
                           f"{load_config(preset_or_yaml)['family']!r}; resume it with the preset it was trained with")
    recorded = saved.get("data")
    if recorded and not same_store(recorded, data):
        raise FacegenError(f"{out} was trained on the face store {recorded}, not {data}; resume it with --data {recorded}, "
                           "or train on the other store into another --out")


def same_store(a, b) -> bool:
    """The same path, or two copies of one store (same content hash)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return FaceStore(a).content_hash == FaceStore(b).content_hash
    except FacegenError:
        return False


def check_eval_reference(store: FaceStore, every: int) -> None:
    """eval_every scores samples against the store's held-out faces: refuse a store without them
    before anything trains."""
    held_out = len(store.split("holdout")) if "holdout" in store.splits else 0
    if held_out < 2:
        raise FacegenError(f"eval_every={every} compares samples with the store's held-out faces, but {store.path} has {held_out}; "
                           f"prepare the store with --holdout N (e.g. --holdout 1000) or set eval_every=0")


def out_of_memory_advice(cfg: dict) -> str:
    """One line for a CUDA out-of-memory error: the generic fix, plus the family's own, if any."""
    accum = cfg["grad_accum"]
    advice = (f"GPU out of memory with micro-batches of {cfg['batch_size'] // accum} image(s) per process; "
              f"raise grad_accum (e.g. grad_accum={accum * 2}: same batch_size, half the images per pass)")
    family_advice = getattr(get_family(cfg["family"]), "memory_advice", None)  # optional: memory_advice(cfg) -> str
    extra = family_advice(cfg) if family_advice else ""
    return f"{advice}; {extra}" if extra else advice




def defines_model(key: str) -> bool:
    return key.split(".")[0] in MODEL_KEYS


def flat(cfg: dict, prefix: str = "") -> dict:
    """{"model.dropout": 0.1, ...}: sections as dotted keys (sample_options stays one value)."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and key != "sample_options":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumed_config(out: Path, saved: dict, overrides: list[str]) -> tuple[dict, dict]:
    """The config a resume trains with (saved, earlier resumes' changes, then `overrides`) and
    what `overrides` change, {key: [before, after]}; a change to the model is refused."""
    earlier = [f"{key}={json.dumps(after)}" for row in resume_history(out) for key, (_, after) in row["changed"].items()]
    before = flat(load_config(saved, earlier))
    cfg = load_config(saved, earlier + overrides)
    after = flat(cfg)
    changed = {key: [before.get(key), value] for key, value in after.items() if before.get(key) != value}
    for key, (old, new) in changed.items():
        if defines_model(key):
            raise FacegenError(f"{out} was trained with {key}={old!r}, and --resume continues that model: {key}={new!r} is refused; "
                               f"train into another --out to change it (or start from the export {out}/model)")
    return cfg, changed


def resume_history(out: Path) -> list[dict]:
    """The changes earlier resumes made, in order (RUN/resumes.jsonl)."""
    path = Path(out) / RESUMES
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_resume(out: Path, step: int, checkpoint: str, changed: dict) -> None:
    """Append one resume to RUN/resumes.jsonl: from which checkpoint, at which step, what changed."""
    row = {"step": step, "checkpoint": checkpoint, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": changed}
    with open(Path(out) / RESUMES, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
