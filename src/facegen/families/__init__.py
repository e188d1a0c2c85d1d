"""Model families. Each is networks + loss + sampler; see base.py for the contract.

FAMILIES maps the `family:` key of a config to its Family object. Add a line per family.
"""

from __future__ import annotations

from facegen.families.base import Built, Family, Generator, Phase
from facegen.utils import FacegenError

FAMILIES: dict[str, Family] = {}

from facegen.families import gan as _gan  # noqa: E402  (after FAMILIES: a family may import this package)

FAMILIES["gan"] = _gan.FAMILY

from facegen.families import ddpm as _ddpm  # noqa: E402

FAMILIES["ddpm"] = _ddpm.FAMILY

from facegen.families import ae as _ae  # noqa: E402

FAMILIES["ae"] = _ae.FAMILY

from facegen.families import ldm as _ldm  # noqa: E402

FAMILIES["ldm"] = _ldm.FAMILY

from facegen.families import sd as _sd  # noqa: E402

FAMILIES["sd"] = _sd.FAMILY


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise FacegenError(f"unknown family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


__all__ = ["Built", "Family", "Generator", "Phase", "FAMILIES", "get_family"]
