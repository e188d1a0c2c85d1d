"""The one sampler registry: name -> diffusers scheduler class, its algorithm options, whether
it draws noise at each step, and the training objective it can sample.

Config validation, the CLI's choices, the page's morph and every diffusion family read it.
Every sampler is built from the model's own training scheduler config (its betas or sigmas,
its prediction type: STYLE G4); a family adds what its data needs (pixel families space steps
"trailing", latent families never clamp).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from facegen.utils import FacegenError

OBJECTIVES = ("ddpm", "edm")


@dataclass(frozen=True)
class Sampler:
    scheduler: str | None               # diffusers class (or facegen's EDMHeunScheduler); None = the model's own
    options: dict = field(default_factory=dict)  # algorithm options given to from_config
    stochastic: bool = False            # draws fresh noise every step (a morph swaps it for a deterministic one)
    objective: str | None = "ddpm"      # the objective whose model it can sample; None = any
    about: str = ""


SAMPLERS: dict[str, Sampler] = {
    "default": Sampler(None, objective=None, about="the model's own: its exported sampler, or a pretrained model's scheduler"),
    "ddpm": Sampler("DDPMScheduler", stochastic=True, about="ancestral, Ho et al. 2020"),
    "ddim": Sampler("DDIMScheduler", about="Song et al. 2021 (eta 0: deterministic)"),
    "pndm": Sampler("PNDMScheduler", {"skip_prk_steps": True}, about="PLMS, Liu et al. 2022 (Stable Diffusion v1's own)"),
    "dpm++": Sampler("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                     about="DPM-Solver++(2M), Lu et al. 2022"),
    "unipc": Sampler("UniPCMultistepScheduler", about="Zhao et al. 2023"),
    "euler-a": Sampler("EulerAncestralDiscreteScheduler", stochastic=True, about="Euler ancestral (k-diffusion)"),
    "heun": Sampler("EDMHeunScheduler", objective="edm", about="EDM's deterministic 2nd-order sampler, Karras et al. 2022 (2N-1 evaluations)"),
    "edm-euler": Sampler("EDMEulerScheduler", objective="edm", about="Euler on EDM's sigma schedule (N evaluations)"),
    "edm-dpm++": Sampler("EDMDPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, objective="edm",
                         about="DPM-Solver++(2M) on EDM's sigma schedule"),
}
# What a morph uses instead of a stochastic sampler (per-step noise would flicker from frame to frame).
DETERMINISTIC = {"ddpm": "ddim", "edm": "heun"}


def objective_of(scheduler_config) -> str:
    """The training objective a scheduler config describes: EDM's sigmas, or DDPM's discrete betas."""
    return "edm" if "sigma_data" in dict(scheduler_config) else "ddpm"


def names(objective: str | None = None) -> tuple[str, ...]:
    """Sampler names that can sample a model of `objective` (None: every name)."""
    return tuple(n for n, s in SAMPLERS.items() if objective is None or s.objective in (None, objective))


def check_sampler(name: str, objective: str, where: str = "sampler") -> None:
    """One line naming the choices when `name` is unknown or cannot sample this objective."""
    if name not in SAMPLERS:
        raise FacegenError(f"{where}: unknown sampler {name!r}; choose one of {', '.join(names(objective))}")
    if name not in names(objective):
        raise FacegenError(f"{where}: sampler {name!r} cannot sample a model trained with objective {objective!r}; "
                           f"choose one of {', '.join(names(objective))}")


def deterministic(name: str, objective: str) -> str:
    """`name`, or the deterministic sampler of the same objective when `name` draws noise every step."""
    return DETERMINISTIC[objective] if SAMPLERS[name].stochastic else name


def make_scheduler(name: str, train_config, **family_options):
    """A fresh scheduler (they keep per-run state) for sampler `name` from the training config.

    family_options (timestep spacing, clamping) apply where the class has them; "default"
    builds the config's own class."""
    import diffusers

    from facegen.families.diffusion import edm

    config = dict(train_config)
    sampler = SAMPLERS[name]
    class_name = sampler.scheduler or config["_class_name"]
    cls = getattr(edm, class_name, None) or getattr(diffusers, class_name)
    accepted = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in {**family_options, **sampler.options}.items() if k in accepted}
    return cls.from_config(config, **extra)
