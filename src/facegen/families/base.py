"""What a family is: its networks, its loss and its sampler, and nothing else (STYLE G1).

The one training loop (facegen/train.py) knows nothing family-specific. It receives a
`Built` from `Family.build`, runs its phases, keeps EMA copies of the nets named in
`Built.ema`, checkpoints every net and optimizer, and at the end calls `Family.export` with
the EMA weights swapped in. Sampling, evaluation and serving only ever see a `Generator`
loaded from the exported folder (RUN/model/).

A diffusion family has one phase ("main"). A GAN has two ("D" then "G"); WGAN's critic
repeats (`Phase.repeats = n_critic`) and clips its weights in `Phase.after_step`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from facegen.config import _is_int, _is_number
from facegen.utils import FacegenError


class Diverged(FacegenError):
    """Training has diverged (a NaN loss, or e.g. a GAN critic loss past its Phase.loss_bound).
    The loop checks at log steps and before every checkpoint: it stops with this message and
    keeps the last good checkpoint."""


@dataclass
class Phase:
    name: str                                   # "main", "D", "G", ...
    nets: list[str]                             # keys of Built.nets whose parameters this phase trains
    optimizer: torch.optim.Optimizer
    repeats: int = 1                            # runs per training step (n_critic for WGAN's "D")
    grad_clip: float | None = None              # max grad norm; None = the config's value
    after_step: Callable[[], None] | None = None  # e.g. WGAN weight clipping, after optimizer.step()
    # Divergence guard: training stops (Diverged) once |loss| of a step passed this bound. The loop
    # keeps the worst |loss| on the device and reads it only at log steps and before a checkpoint.
    loss_bound: float | None = None
    bound_key: str = "loss_bound"               # the config key that sets the bound, for the message
    # torch.compile (the `compile` key) may compile this phase's forward and loss. False where the
    # loss takes a gradient of a gradient (R1, WGAN-GP: autograd.grad with create_graph), which
    # AOTAutograd cannot differentiate again ("does not currently support double backward").
    compilable: bool = True


class Loss(Protocol):
    def __call__(self, phase: str, nets: dict[str, nn.Module], images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """One phase's objective on a batch of real images (B, 3, H, W) in [-1, 1].

        Returns the loss to backpropagate (per-sample (B,) or a scalar; the loop takes the
        mean) and a dict of scalars to log (e.g. {"loss_D": .., "gp": ..}). The loss draws
        its own timesteps and noise from torch's global RNG, which the loop seeds,
        checkpoints and restores, so a resumed run continues the exact trajectory.
        """


@dataclass
class Built:
    nets: dict[str, nn.Module]                  # every trained net, checkpointed by name
    phases: list[Phase]
    loss: Loss
    ema: list[str] = field(default_factory=list)  # nets that get an EMA copy (exported instead of the raw weights)
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # used but never trained (VAE, text encoder)
    # What the loop trains on instead of the store's faces (e.g. cached VAE latents): a Dataset
    # of the store's training faces addressed by (index, flip) like data.stream.FlippedFaces;
    # the loss receives its batches. None = the faces themselves.
    dataset: Any = None


class Generator(Protocol):
    """A trained model ready to make faces. Image k depends only on seed k (STYLE G9)."""

    name: str
    family: str
    resolution: int

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """The starting point of each seed (z for a GAN, x_T for diffusion), one torch.Generator per seed."""

    def decode(self, noise: torch.Tensor, seeds: Sequence[int], **options: Any) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] from `noise`. Stochastic samplers draw their
        per-step noise from generators seeded by `seeds`, so results never depend on the
        batch a seed lands in. Options: sampler, steps, guidance_scale, ...; psi (truncation)
        only reaches a generator whose class sets `truncation = True` (see
        facegen.sample.decode_options), so the others need not know it."""

    def info(self) -> dict:
        """Name, family, resolution, sampler and steps defaults, device: for /info and reports."""


@dataclass(frozen=True)
class Range:
    """The values one option allows: `what` says them in an error message, `allows` tests a value."""

    what: str                                   # e.g. "a number in [0, 1)"
    allows: Callable[[Any], bool]


def integer(low: int = 1, optional: bool = False) -> Range:
    """An integer >= low; optional: or null (the option's comment says what null means)."""
    what = "a positive integer" if low == 1 else f"an integer >= {low}"
    return _or_null(Range(what, lambda v: _is_int(v) and v >= low), optional)


def number(bounds: str, optional: bool = False) -> Range:
    """A number within `bounds`, written as the message shows it: "> 0", ">= 0" or an
    interval such as "[0, 1)"; optional: or null."""
    if bounds.startswith(">"):
        low, strict = float(bounds.lstrip(">= ")), not bounds.startswith(">=")
        inside = (lambda v: v > low) if strict else (lambda v: v >= low)
        what = f"a number {bounds}"
    else:
        low, high = (float(end) for end in bounds[1:-1].split(","))
        above = (lambda v: v > low) if bounds[0] == "(" else (lambda v: v >= low)
        below = (lambda v: v < high) if bounds[-1] == ")" else (lambda v: v <= high)
        inside, what = (lambda v: above(v) and below(v)), f"a number in {bounds}"
    return _or_null(Range(what, lambda v: _is_number(v) and inside(v)), optional)  # NaN is inside nothing


def integers(non_empty: bool = False) -> Range:
    """A list of positive integers (channel counts, feature-map sizes)."""
    return Range(f"a {'non-empty ' if non_empty else ''}list of positive integers",
                 lambda v: isinstance(v, list) and (bool(v) or not non_empty) and all(_is_int(n) and n >= 1 for n in v))


def text(optional: bool = False) -> Range:
    return _or_null(Range("a string", lambda v: isinstance(v, str)), optional)


def _or_null(allowed: Range, optional: bool) -> Range:
    if not optional:
        return allowed
    return Range(f"{allowed.what} or null", lambda v: v is None or allowed.allows(v))


def refuse_outside(key: str, value: Any, allowed: Range) -> None:
    """One line naming the key, what it allows and the value it got."""
    if not allowed.allows(value):
        raise FacegenError(f"{key} must be {allowed.what}, got {value!r}")


# psi (truncation) reaches every generator through facegen.sample.decode_options, which lets
# psi = 1 through for every family and refuses anything else for those without truncation.
NO_TRUNCATION = Range("1 (truncation is for GANs)", lambda v: _is_number(v) and v == 1)


class FamilyOptions:
    """Base of every family's `model:` options, each a frozen dataclass (GanOptions,
    DiffusionOptions, ...): one field per key, its default and a comment saying what it does.

    config.load_config fills a run's `model:` section from `defaults()` (the family's
    `model_defaults`) and refuses other keys, so RUN/config.yaml lists every option; the
    family reads them back with `from_config(cfg)` as attributes. It also calls `check`, so a
    value out of range is refused when the config is read, before anything trains: RANGES
    holds each numeric key's allowed values, SAMPLE_OPTIONS the keys (and values) of the run's
    `sample_options` that the family's Generator.decode takes, and a family overrides
    `check` for what involves two keys (beta_start < beta_end)."""

    family: ClassVar[str] = "?"
    RANGES: ClassVar[dict[str, Range]] = {}
    SAMPLE_OPTIONS: ClassVar[dict[str, Range]] = {"psi": NO_TRUNCATION}

    def check(self, sample_options: dict) -> None:
        """FacegenError (one line: the key, its range, the value) for the first value out of range."""
        for key, allowed in self.RANGES.items():
            refuse_outside(f"model.{key}", getattr(self, key), allowed)
        for key, value in sample_options.items():
            if key not in self.SAMPLE_OPTIONS:
                raise FacegenError(f"unknown sample_options key {key} for family {self.family!r}; "
                                   f"known: {', '.join(sorted(self.SAMPLE_OPTIONS))}")
            refuse_outside(f"sample_options.{key}", value, self.SAMPLE_OPTIONS[key])

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: copy.deepcopy(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls)}

    @classmethod
    def from_config(cls, cfg: dict):
        section = dict(cfg.get("model") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise FacegenError(f"unknown model key(s) {', '.join(unknown)} for family {cls.family!r}; known: {', '.join(sorted(known))}")
        return cls(**section)


def option(default) -> Any:
    """A dataclass field whose default is a list (or other mutable value), copied per instance."""
    return field(default_factory=lambda: copy.deepcopy(default))


class Family(Protocol):
    """Required: name, build, export, load_generator. Optional (the loop checks with hasattr):

    model_defaults: dict   the family's `model:` keys with their defaults (its FamilyOptions'
                           defaults()). config.load_config fills missing keys from it and
                           refuses keys not in it, so the resolved RUN/config.yaml shows
                           every model option.
    options: type          its FamilyOptions class: config.load_config calls its `check`.
    generator(built, cfg)  a Generator on the live training nets (EMA weights swapped in by
                           the loop) for the sample grids during training; without it the loop
                           exports to a temporary folder and calls load_generator.
    Export must also write facegen.json with at least {"family": name} into out_dir:
    facegen.sample.load_generator reads it to find the family of RUN/model/.
    """

    name: str

    def build(self, cfg: dict, resolution: int) -> Built:
        """Networks, optimizers (one per phase) and loss from the resolved config."""

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        """Write the diffusers-loadable snapshot (EMA weights already swapped in) to out_dir."""

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> Generator:
        """Load what `export` wrote."""
