"""`facegen eval` and `facegen compare` end to end on small real-face sets.

Inception on a CPU runs at a few pictures per second, so these use tiny stores (40 train +
16 holdout CelebA faces at 32x32) and share one feature cache folder per module: the
reference features are computed once and reused by every command (which also tests the
cache). FID needs >= 2,048 pictures, so here only its refusal is tested; the FID maths is
tested in test_metrics_maths.py and on real faces in test_metrics_real_faces.py.
"""

import json

import numpy as np
import pytest

from facegen.data.store import write_store
from facegen.data.transforms import crop_celeba, crop_center
from facegen.metrics.images import ImageFolder
from facegen.utils import save_png

PLANTED = 8  # index of the training face copied into the generated folder (in the spread pools of 10, not of 3)


@pytest.fixture(scope="module")
def sets(celeba_dir, utk_dir, tmp_path_factory):
    """A CelebA reference store, a folder of other CelebA faces with one planted training
    copy, a UTKFace store (real vs real) and a feature cache folder."""
    root = tmp_path_factory.mktemp("eval")
    celeba = ImageFolder(celeba_dir, limit=80)
    faces = np.stack([crop_celeba(celeba[i], 32) for i in range(80)])
    ref = write_store(root / "ref", {"train": faces[:40], "holdout": faces[40:56]}, {"source": "test", "size": 32})
    folder = root / "generated"
    for i, face in enumerate(faces[56:68]):  # faces the store never saw
        save_png(folder / f"seed{i:06d}.png", face)
    save_png(folder / "seed000012.png", faces[PLANTED])  # the planted copy of a training face
    utk = ImageFolder(utk_dir, limit=24)
    other = write_store(root / "utk", {"train": np.stack([crop_center(utk[i], 32) for i in range(24)])}, {"source": "test", "size": 32})
    return {"root": root, "ref": ref.path, "folder": folder, "utk": other.path, "cache": root / "cache"}


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a whole eval prints no numpy warning on the terminal (issue 29)
def test_eval_folder_writes_reports_and_catches_the_planted_copy(sets, facegen):
    out = sets["root"] / "report-folder"
    done = facegen("eval", sets["folder"], "--ref", sets["ref"], "--metrics", "kid,pr,dc,mem,faces", "--out", out, cache=sets["cache"])
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"] == {"kind": "folder", "path": str(sets["folder"]), "name": "generated", "count": 13}
    assert report["reference"]["split"] == "holdout" and report["reference"]["count"] == 16
    assert report["command"].startswith("facegen eval ") and "--metrics kid,pr,dc,mem,faces" in report["command"]
    assert len(report["feature_network"]["sha256"]) == 64 and "bicubic" in report["feature_network"]["resize"]
    m = report["metrics"]
    assert m["kid"]["n_generated"] == 13 and m["kid"]["n_reference"] == 16 and m["kid"]["std"] > 0
    for name in ("precision", "recall", "coverage"):
        assert 0 <= m[name]["value"] <= 1
    # the planted copy: flagged in pixel and Inception space, and the closest pair of both
    for space in ("pixels", "inception"):
        audit = m["memorization"][space]
        assert PLANTED in [p["train"] for p in audit["closest_pairs"][:1]] and 12 in audit["flagged"], (space, audit)
        assert audit["closest_pairs"][0]["generated"] == 12 and audit["closest_pairs"][0]["distance"] < 1e-3
        assert audit["copy_share"] <= 2 / 13  # the copy, and at most one unlucky look-alike
    identity = m["memorization"]["identity"]
    if identity["faces_generated"] and 12 in identity.get("flagged", []):
        assert identity["uniqueness"] < 1
    faces = m["faces"]
    assert faces["generated"]["n"] == 13 and faces["reference"]["n"] == 16
    assert set(faces["wasserstein1"]) == {"roll_deg", "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y"}
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "Memorization audit" in md and "![" in md and (out / "closest_pairs.png").is_file()
    assert html.count("data:image/png;base64,") == 3 and "<img src=\"closest_pairs.png" not in html  # self-contained
    assert len(list(sets["cache"].glob("inception-*.npy"))) == 3  # holdout, train and generated features, cached


@pytest.mark.parametrize("pool, found_in_inception", [(10, True), (3, False)])
def test_mem_pool_limits_the_inception_search_but_not_the_pixel_one(pool, found_in_inception, sets, facegen):
    out = sets["root"] / f"report-pool{pool}"
    done = facegen("eval", sets["folder"], "--ref", sets["ref"], "--metrics", "mem", "--mem-pool", pool, "--out", out, cache=sets["cache"])
    assert done.returncode == 0, done.stderr
    mem = json.loads((out / "metrics.json").read_text())["metrics"]["memorization"]
    assert mem["inception"]["n_train"] == pool and mem["train_count"] == 40
    assert mem["inception"]["pool"] == "evenly spaced over the train split"  # rows 0, 4, 8, ... (10) or 0, 13, 26 (3)
    assert 12 in mem["pixels"]["flagged"]  # the pixel search always covers the whole train split
    nearest = mem["inception"]["closest_pairs"][0]
    assert (nearest["generated"] == 12 and nearest["distance"] < 1e-3) is found_in_inception


def test_eval_store_real_vs_real_and_reuses_cached_reference(sets, facegen):
    out = sets["root"] / "report-store"
    before = sorted(p.name for p in sets["cache"].glob("inception-*.npy"))
    done = facegen("eval", sets["utk"], "--ref", sets["ref"], "--metrics", "kid,pr", "--out", out, cache=sets["cache"])
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["kind"] == "store" and report["source"]["split"] == "train" and report["source"]["count"] == 24
    assert set(report["metrics"]) == {"kid", "precision", "recall"}
    after = sorted(p.name for p in sets["cache"].glob("inception-*.npy"))
    assert set(before) < set(after) and len(after) == len(before) + 1  # only the UTK store's features are new


def test_eval_run_samples_first(sets, facegen, tiny_gan_model):
    out = sets["root"] / "report-run"
    done = facegen("eval", tiny_gan_model, "--ref", sets["ref"], "--n", "8", "--metrics", "kid", "--out", out, cache=sets["cache"])
    assert done.returncode == 0, done.stderr
    assert len(list((out / "samples").glob("seed*.png"))) == 8
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["kind"] == "run" and report["metrics"]["kid"]["n_generated"] == 8


def test_eval_run_with_truncation_samples_at_that_psi_under_its_own_name(sets, facegen, tiny_gan_model):
    from facegen.sample import read_record

    out = sets["root"] / "report-run-psi"
    done = facegen("eval", tiny_gan_model, "--ref", sets["ref"], "--n", "8", "--metrics", "kid", "--out", out,
                   "--truncation", "0.5", cache=sets["cache"])
    assert done.returncode == 0, done.stderr
    assert read_record(out / "samples")["settings"]["psi"] == 0.5
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["name"] == tiny_gan_model.name + "-psi0.5"  # its own row in `facegen compare`


def test_compare_groups_seeds_and_marks_incomparable(sets, facegen, tmp_path):
    base = json.loads((sets["root"] / "report-folder" / "metrics.json").read_text())
    for name, kid, n in [("00001-ddpm-seed0", 0.010, 13), ("00002-ddpm-seed1", 0.020, 13),
                         ("gan_seed0", 0.050, 13), ("gan_seed1", 0.070, 99)]:
        r = json.loads(json.dumps(base))
        r["source"]["name"] = name
        r["metrics"]["kid"]["value"], r["metrics"]["kid"]["n_generated"] = kid, n
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(r))
    done = facegen("compare", *[tmp_path / d for d in ("00001-ddpm-seed0", "00002-ddpm-seed1", "gan_seed0", "gan_seed1")],
                   "--out", tmp_path / "table.md")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 2 | 15.00 ± 7.07 |" in rows["ddpm"]  # KID x1e3: mean and sample std of 10 and 20
    assert "| 50.00 / 70.00†1 |" in rows["gan"]    # one gan report used 99 samples: not comparable, not averaged in
    assert "- †1 not comparable with the rest of its column: 99 generated pictures (column: 13)." in table
    assert "not comparable" in table and "ddpm" in done.stdout
    # the face check is per picture: its note names no reference set
    assert "one face: share of 13 generated pictures" in table and "training split" not in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nowhere", "--ref", "{ref}"], "no such folder"),
        (["{folder}", "--ref", "{tmp}/nostore"], "no such face store"),
        (["{folder}", "--ref", "{ref}"], "FID needs at least 2,048 pictures per set but 13 generated pictures; use KID"),
        (["{folder}", "--ref", "{ref}", "--metrics", "kid,is"], "Inception Score is unavailable"),
        (["{folder}", "--ref", "{ref}", "--metrics", "kid,fidd"], "unknown metric(s) fidd"),
        (["{folder}", "--ref", "{ref}", "--split", "val", "--metrics", "kid"], "has no split 'val'"),
        (["{tmp}/empty", "--ref", "{ref}", "--metrics", "kid"], "no images found"),
    ],
    ids=["missing-folder", "missing-store", "fid-too-few", "no-inception-score", "unknown-metric", "bad-split", "empty"],
)
def test_user_errors_exit_2_with_one_line(args, message, sets, facegen, tmp_path):
    (tmp_path / "empty").mkdir()
    done = facegen("eval", *[a.format(tmp=tmp_path, ref=sets["ref"], folder=sets["folder"]) for a in args])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_run_refused_for_fid_before_sampling(sets, facegen, tiny_gan_model, tmp_path):
    done = facegen("eval", tiny_gan_model, "--ref", sets["ref"], "--n", "100", "--out", tmp_path / "r")
    assert done.returncode == 2 and "FID needs at least 2,048 pictures per set" in done.stderr and "use KID" in done.stderr
    assert not (tmp_path / "r").exists()  # nothing was sampled


def test_compare_says_when_knn_metrics_compared_equal_counts(tmp_path):
    """KID used 500 vs 1000 pictures, precision/recall 500 of each: the table must not say 500 vs 1000 for both."""
    from facegen.metrics.compare import compare

    report = {
        "source": {"name": "run"},
        "reference": {"content_hash": "ab" * 32, "split": "holdout"},
        "metrics": {
            "kid": {"value": 0.1, "n_generated": 500, "n_reference": 1000},
            "precision": {"value": 0.5, "n_generated": 500, "n_reference": 1000, "n_compared_each": 500},
        },
    }
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    notes = [line for line in compare([tmp_path], show=False).splitlines() if line.startswith("- ")]
    assert "- KID x1e3: 500 generated pictures vs 1000 reference pictures ('holdout' of store abababababab)." in notes
    assert ("- precision: 500 generated pictures vs 1000 reference pictures ('holdout' of store abababababab), "
            "500 of each compared (the larger set subsampled).") in notes
