"""Configuration as simple data: a YAML preset, `key=value` overrides, one resolved dict.

    cfg = load_config("ddpm-tiny32", ["lr=2e-4", "model.block_out_channels=[16,32]"])

A preset is a name of a file in facegen/configs/ (packaged) or a path to a YAML file. Every
common key has a default in DEFAULTS below; a key that is not there is refused with a clear
message, so a typo never silently does nothing. `model:` belongs to the family: the family's
`model_defaults` (if it has one) fills it and names its allowed keys.

Batch arithmetic (what makes results independent of the number of processes):
`batch_size` is the global batch of one optimizer step. Each process loads micro-batches of
    batch_size / (world_size * grad_accum)
images, which must be a whole number (checked up front by `per_process_batch`).
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facegen.utils import FacegenError, atomic_write_text, parse_seeds

DEFAULTS: dict[str, Any] = {
    "family": "ddpm",
    "name": None,                  # run name shown in exports and /info; None = the run folder's name
    "data": None,                  # the face store's path, recorded by `facegen train --data`
    "preset": None,                # the preset name or YAML file the run started from, recorded; --resume checks it
    "resolution": None,            # pixels; None = the face store's resolution
    "batch_size": 32,              # global images per optimizer step (all processes, all accumulation steps)
    "steps": 10000,                # optimizer steps in total (a resumed run continues up to this)
    "time_limit": None,            # minutes of training in this invocation; then checkpoint + export as at the last step. None = no limit
    "lr": 1e-4,                    # peak learning rate, after warm-up
    "adam_betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "warmup_steps": 0,             # linear lr warm-up from lr/warmup_steps to lr
    "grad_clip": 1.0,              # max global grad norm per phase; None = no clipping
    "grad_accum": 1,               # micro-batches accumulated per optimizer step
    "ema": {
        "decay": 0.9999,           # the highest decay the EMA reaches
        "warmup": True,            # diffusers EMAModel warm-up: decay = 1 - (1 + step/inv_gamma)^-power
        "inv_gamma": 1.0,
        "power": 0.75,             # 3/4 suits short runs, 2/3 long ones (Karras et al.)
        "update_after_step": 0,
    },
    "checkpoint_every": 1000,      # steps between checkpoints
    "keep_checkpoints": 3,         # newest checkpoints kept; older ones are deleted
    "sample_every": 1000,          # steps between sample grids (RUN/samples/step-XXXXXX.png)
    "sample_seeds": "0-15",        # the fixed seeds of every grid
    "sample_options": {},          # passed to the generator, e.g. {sampler: ddim, steps: 50}
    "eval_every": 0,               # steps between KID (and FID) evaluations of the EMA weights against the holdout; 0 = off
    "eval_samples": 500,           # faces per evaluation: fixed seeds, against as many held-out faces as the holdout has up to this
    "log_every": 10,               # steps between metrics.jsonl lines (and NaN checks)
    "seed": 0,                     # seeds initialisation, data order and the loss's noise
    "mixed_precision": "auto",     # auto = bf16 on GPU, no on CPU; or no, bf16, fp16
    "channels_last": "auto",       # memory format of the nets and batches; auto = true on CUDA, false on the CPU (measured: BENCHMARKS.md)
    "fused_optimizer": "auto",     # Adam/AdamW as one fused kernel; auto = true (CUDA, and the CPU too: measured faster, BENCHMARKS.md)
    "compile": "auto",             # torch.compile each phase's forward and loss: false, true (= default), or a mode
                                   # (default, reduce-overhead = CUDA graphs, max-autotune, max-autotune-no-cudagraphs); auto = default on CUDA, false on the CPU
    "data_on_device": 0.25,        # hold the training split on the device as uint8 when it takes at most this fraction of
                                   # the device's memory (GPU memory, or RAM on the CPU); 0 = always stream it from disk
    "threads": None,               # torch CPU threads; None = torch's default (one per core). 1 wins on a busy machine
    "num_workers": 0,              # DataLoader worker processes (0 = load in the training process)
    "hflip": True,                 # flip faces left-right (deterministically per data position)
    "tensorboard": True,           # also log to RUN/tensorboard through accelerate's tracker
    "model": {},                   # family-specific; see the family's model_defaults
}

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTO_KEYS = ("channels_last", "fused_optimizer", "compile")  # true, false or auto (compile: or a mode)


def on_device(cfg: dict, key: str, cuda: bool):
    """The value of one of AUTO_KEYS on this device (compile: the mode name, or False). auto
    means what measured fastest there (bench/bench_gpu.py, BENCHMARKS.md): on for CUDA;
    on the CPU, fused Adam only (channels_last slowed the tiny UNet, compile costs more than
    it saves in CPU-sized runs)."""
    value = cfg[key]
    if value == "auto":
        value = cuda or key == "fused_optimizer"
    if key == "compile":
        return "default" if value is True else (value or False)
    return bool(value)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-4 (no dot) as a string; read it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.nan)$", re.X | re.I),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("facegen.configs").iterdir() if p.name.endswith(".yaml"))


def load_config(preset_or_yaml: str | Path | dict, overrides: list[str] | None = None) -> dict:
    """DEFAULTS <- preset (name or YAML path, or a dict) <- overrides ("a.b=value", YAML-typed)."""
    cfg = copy.deepcopy(DEFAULTS)
    preset = preset_or_yaml if isinstance(preset_or_yaml, dict) else _read_preset(preset_or_yaml)
    where = "config" if isinstance(preset_or_yaml, dict) else str(preset_or_yaml)
    _merge(cfg, preset, where)
    preset_values = copy.deepcopy(cfg)  # what an error quotes as the value to imitate: the preset's, not DEFAULTS'
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise FacegenError(f"bad override {item!r}: write key=value, e.g. lr=2e-4 or model.layers_per_block=1")
        _set(cfg, key.strip().split("."), parse_yaml(text), f"override {item!r}")
    return _resolve(cfg, where, preset_values)


def _read_preset(name: str | Path) -> dict:
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        packaged = resources.files("facegen.configs") / f"{name}.yaml"
        if not packaged.is_file():
            raise FacegenError(f"unknown preset {name!r}; give a YAML file or one of: {', '.join(preset_names())}")
        return parse_yaml(packaged.read_text()) or {}
    if not path.is_file():
        raise FacegenError(f"{path}: no such config file")
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FacegenError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FacegenError(f"{path}: a config is a YAML mapping of key: value lines")
    return data


def _merge(cfg: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        _set(cfg, [key], value, where)


def _set(cfg: dict, path: list[str], value: Any, where: str) -> None:
    """Set cfg[a][b]... = value; keys outside DEFAULTS are refused, except under `model` and
    `sample_options` (the family checks those: see _resolve)."""
    node, defaults = cfg, DEFAULTS
    for i, key in enumerate(path):
        free = path[0] in ("model", "sample_options") and i > 0
        if not free and (not isinstance(defaults, dict) or key not in defaults):
            known = ", ".join(sorted(defaults)) if isinstance(defaults, dict) else "none"
            raise FacegenError(f"{where}: unknown key {'.'.join(path[: i + 1])!r}; known keys here: {known}")
        if i == len(path) - 1:
            if isinstance(node.get(key), dict) and isinstance(value, dict) and key != "sample_options":
                for sub, v in value.items():
                    _set(cfg, [*path, sub], v, where)
            else:
                node[key] = value
            return
        node = node.setdefault(key, {})
        defaults = defaults[key] if not free and isinstance(defaults, dict) else {}


def _resolve(cfg: dict, where: str, preset_values: dict | None = None) -> dict:
    """Fill the family's model defaults, refuse its unknown model keys, check value types and
    ranges (the family's own: its FamilyOptions.check)."""
    from facegen.families import FAMILIES

    if cfg["family"] not in FAMILIES:
        raise FacegenError(f"{where}: unknown family {cfg['family']!r} (key family); choose one of {', '.join(sorted(FAMILIES))}")
    family = FAMILIES[cfg["family"]]
    model_defaults = getattr(family, "model_defaults", None)
    if model_defaults is not None:
        unknown = sorted(set(cfg["model"]) - set(model_defaults))
        if unknown:
            raise FacegenError(f"{where}: unknown model key(s) {', '.join(unknown)} for family {cfg['family']!r}; known: {', '.join(sorted(model_defaults))}")
        cfg["model"] = {**copy.deepcopy(model_defaults), **cfg["model"]}
    if cfg["mixed_precision"] is False:  # YAML 1.1 reads a bare `no` (mixed_precision=no) as false
        cfg["mixed_precision"] = "no"
    quoted = preset_values or {}
    _check_types(cfg, DEFAULTS, where, quoted=quoted)
    if model_defaults is not None:
        _check_types(cfg["model"], model_defaults, where, "model.", {**model_defaults, **(quoted.get("model") or {})})
    for key in ("batch_size", "steps", "grad_accum", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise FacegenError(f"{where}: {key} must be a positive integer, got {cfg[key]!r}")
    for key, ok, what in (
        ("lr", cfg["lr"] > 0, "a positive number, e.g. lr=2e-4"),
        ("weight_decay", cfg["weight_decay"] >= 0, "a number >= 0"),
        ("warmup_steps", cfg["warmup_steps"] >= 0, "an integer >= 0"),
        ("num_workers", cfg["num_workers"] >= 0, "an integer >= 0"),
        ("grad_clip", cfg["grad_clip"] is None or (_is_number(cfg["grad_clip"]) and cfg["grad_clip"] > 0), "a positive number or null (no clipping)"),
        ("adam_betas", len(cfg["adam_betas"]) == 2 and all(_is_number(b) and 0 <= b < 1 for b in cfg["adam_betas"]), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
        ("seed", _is_int(cfg["seed"]) and 0 <= cfg["seed"] < 2**32, "an integer in [0, 2**32)"),
        ("ema.decay", 0 <= cfg["ema"]["decay"] <= 1, "a number in [0, 1]"),
        ("ema.inv_gamma", cfg["ema"]["inv_gamma"] > 0, "a number > 0"),
        ("ema.power", cfg["ema"]["power"] > 0, "a number > 0"),
        ("ema.update_after_step", cfg["ema"]["update_after_step"] >= 0, "an integer >= 0"),
        ("resolution", cfg["resolution"] is None or (_is_int(cfg["resolution"]) and cfg["resolution"] >= 8), "a side in pixels (>= 8) or null (the store's)"),
        ("threads", cfg["threads"] is None or (_is_int(cfg["threads"]) and cfg["threads"] >= 1), "a positive integer or null (one per core)"),
    ):
        if not ok:
            value = cfg["ema"][key[len("ema."):]] if key.startswith("ema.") else cfg[key]
            raise FacegenError(f"{where}: {key} must be {what}, got {value!r}")
    every, samples = cfg["eval_every"], cfg["eval_samples"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise FacegenError(f"{where}: eval_every is steps between evaluations (an integer >= 0; 0 = off), got {every!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise FacegenError(f"{where}: eval_samples must be an integer >= 2 (KID compares sets of at least 2 faces), got {samples!r}")
    limit = cfg["time_limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0):
        raise FacegenError(f"{where}: time_limit is minutes of training (a positive number) or null, got {limit!r}")
    for key in AUTO_KEYS:
        allowed = (True, False, "auto", *(COMPILE_MODES if key == "compile" else ()))
        if not any(cfg[key] is a if isinstance(a, bool) else cfg[key] == a for a in allowed):
            raise FacegenError(f"{where}: {key} must be true, false or auto{' or a mode: ' + ', '.join(COMPILE_MODES) if key == 'compile' else ''}, got {cfg[key]!r}")
    budget = cfg["data_on_device"]
    if not _is_number(budget) or not 0 <= budget <= 1:
        raise FacegenError(f"{where}: data_on_device is the fraction of the device's memory the training faces may take (0 to 1; 0 = never), got {budget!r}")
    if cfg["mixed_precision"] not in MIXED_PRECISION:
        raise FacegenError(f"{where}: mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {cfg['mixed_precision']!r}")
    if not isinstance(cfg["sample_options"], dict):
        raise FacegenError(f"{where}: sample_options is a mapping, e.g. {{sampler: ddim, steps: 50}}")
    try:
        parse_seeds(cfg["sample_seeds"])
    except (FacegenError, TypeError, ValueError):
        raise FacegenError(f"{where}: sample_seeds must be a seed list such as 0-15 or 0-7,100, got {cfg['sample_seeds']!r}") from None
    # The family's model values and sample_options, each in its range (FamilyOptions.check).
    options = getattr(family, "options", None)
    if options is not None:
        try:
            options.from_config(cfg).check(cfg["sample_options"])
        except FacegenError as e:
            raise FacegenError(f"{where}: {e}") from None
    known = samplers(cfg["family"], cfg["model"].get("objective") or "ddpm")
    for key, value in (("model.sampler", cfg["model"].get("sampler")), ("sample_options.sampler", cfg["sample_options"].get("sampler"))):
        if value is not None and known is not None and value not in known:
            raise FacegenError(f"{where}: {key} must be one of {', '.join(known)} for family {cfg['family']!r}, got {value!r}")
    return cfg


def samplers(family: str, objective: str = "ddpm") -> tuple[str, ...] | None:
    """The sampler names a family's model.sampler and sample_options.sampler accept for a model
    trained with `objective` (None: the family has no sampler choice)."""
    if family in ("ddpm", "ldm", "sd"):
        from facegen.families.diffusion.samplers import names

        return names(objective)
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML true is an int to Python


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_types(values: dict, defaults: dict, where: str, prefix: str = "", quoted: dict | None = None) -> None:
    """Each value has its default's kind (a number where the default is a number, ...), so that
    lr=abc is refused here, not as a traceback from the optimizer after the data is loaded.
    Keys whose default is None take anything here (checked where they are used); None itself
    passes for model keys (the family decides) and for grad_clip (= no clipping)."""
    kinds = ((bool, "true or false", lambda v: isinstance(v, bool)), (int, "an integer", _is_int),
             (float, "a number", _is_number), (str, "a string", lambda v: isinstance(v, str)),
             (list, "a list, e.g. [1, 2]", lambda v: isinstance(v, list)), (dict, "a mapping", lambda v: isinstance(v, dict)))
    for key, default in defaults.items():
        value = values.get(key)
        if default is None or key in ("model", "sample_seeds", *AUTO_KEYS) or (value is None and (prefix or key == "grad_clip")):
            continue
        kind, what, ok = next(k for k in kinds if isinstance(default, k[0]))
        if not ok(value):
            example = (quoted or {}).get(key, default)
            example = example if ok(example) else default  # the preset's value, where it is of the right kind
            raise FacegenError(f"{where}: {prefix}{key} must be {what} (like {'its default' if example == default else 'the preset'} "
                               f"{example!r}), got {value!r}")
        if kind is dict and not prefix and key != "sample_options":
            _check_types(value, default, where, f"{key}.", (quoted or {}).get(key))


def per_process_batch(cfg: dict, world_size: int) -> int:
    """Images per micro-batch on one process; batch_size must split evenly (STYLE G6)."""
    batch, accum = cfg["batch_size"], cfg["grad_accum"]
    if batch % (world_size * accum):
        raise FacegenError(
            f"batch_size {batch} does not split into {world_size} process(es) x grad_accum {accum}; "
            f"choose a batch_size that is a multiple of {world_size * accum}"
        )
    return batch // (world_size * accum)


def save_config(cfg: dict, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))


def read_run_config(run: str | Path) -> dict:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FacegenError(f"{path} is missing: {run} is not a training run (nothing to resume)")
    return parse_yaml(path.read_text())
