"""The layout docs/DESIGN.md describes is the tree: one place per job (issue 20)."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from facegen.families import FAMILIES
from facegen.families.base import FamilyOptions

SRC = Path(__file__).resolve().parents[1] / "src" / "facegen"
DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"
FAMILY_FILES = ("__init__.py", "networks.py", "generator.py")
OWN_CORE_FILES = ("loss.py", "sampler.py")   # gan and ae; the diffusion families share families/diffusion/
DIFFUSION = ("ddpm", "ldm", "sd")
CORE = SRC / "families" / "diffusion"


def test_every_family_has_the_same_files_and_design_lists_them():
    design = DESIGN.read_text()
    listed = re.search(r"families/<name>/\s+(.*?) every one with the same", design).group(1)
    assert sorted(n.strip() for n in listed.rstrip(",").split(",")) == sorted(FAMILIES)
    for name in FAMILIES:
        for file in FAMILY_FILES:
            assert (SRC / "families" / name / file).is_file(), f"families/{name}/{file} missing"
    for file in FAMILY_FILES + OWN_CORE_FILES:
        assert re.search(rf"^\s+{re.escape(file)}\s", design, re.M), f"DESIGN.md does not describe {file}"
    for name in FAMILIES:
        for file in OWN_CORE_FILES:  # a diffusion family's loss and sampling are the core's, never its own copy
            assert (SRC / "families" / name / file).is_file() == (name not in DIFFUSION), f"families/{name}/{file}"
    for file in ("samplers.py", "loss.py", "loop.py", "edm.py"):
        assert (CORE / file).is_file() and file in design.split("families/diffusion/")[1][:900], f"families/diffusion/{file}"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_generator_lives_in_its_generator_module(name):
    tree = ast.parse((SRC / "families" / name / "generator.py").read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert classes and all(any(isinstance(s, ast.FunctionDef) and s.name == "decode" for s in c.body) for c in classes)
    others = [p for p in (SRC / "families" / name).glob("*.py") if p.name != "generator.py"]
    for path in others:  # no generator class anywhere else in the family
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                assert not any(isinstance(s, ast.FunctionDef) and s.name == "initial_noise" for s in node.body), f"{path.name}: {node.name}"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_options_are_one_dataclass_per_family(name):
    family = FAMILIES[name]
    options = [v for v in vars(__import__(f"facegen.families.{name}", fromlist=["x"])).values()
               if isinstance(v, type) and issubclass(v, FamilyOptions) and v is not FamilyOptions and v.family == name]
    assert len(options) == 1 and dataclasses.is_dataclass(options[0])
    assert family.model_defaults == options[0].defaults()
    assert options[0].from_config({"model": family.model_defaults}) == options[0]()


def test_distributed_is_plumbing_only_and_sampling_has_one_entry():
    imports = {n.module for n in ast.walk(ast.parse((SRC / "distributed.py").read_text())) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("facegen.sample") for m in imports)
    for path in [SRC / "cli.py", SRC / "evaluate.py", SRC / "sweep.py", *sorted((SRC / "serve").glob("*.py"))]:
        text = path.read_text()
        assert not re.search(r"families\.\w+\.(sampler|generator) import", text), f"{path.name} bypasses facegen.sample"


def test_one_uint8_to_model_range_conversion():
    hits = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if re.search(r"127\.5\)?\s*\.?\s*sub|div_?\(127\.5", p.read_text())]
    assert hits == ["utils.py"]


def test_no_absolute_path_of_the_machine_a_result_was_made_on():
    root = SRC.parents[1]
    files = [root / "README.md", root / "BENCHMARKS.md", *(root / "docs").rglob("*"), *SRC.rglob("*"), *(root / "bench" / "results").rglob("*")]
    texts = [p for p in files if p.is_file() and p.suffix in (".md", ".json", ".py", ".yaml", ".txt", ".html")]
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in texts for m in re.finditer(r"(?<![\w.])/(work|root|home|Users|tmp)/[\w./-]+", p.read_text(errors="replace"))]
    assert not found, found[:5]
