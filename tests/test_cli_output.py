"""What the newcomer reads: plots' tick labels, eval's printed table, compare's table, --help (issue 29)."""

from __future__ import annotations

import pytest

from facegen.run_log import plot_eval, plot_losses


def _figure(monkeypatch):
    """Keep the figure a plot function draws instead of closing it."""
    from facegen import run_log

    kept = {}
    monkeypatch.setattr(run_log, "_save_figure", lambda fig, out: kept.setdefault("fig", fig))
    return kept


@pytest.mark.parametrize("losses", [[1.2341, 1.2342, 1.2343], [-0.0012, 0.0008, 0.0003], [0.00061, 0.00062, 0.00064]])
def test_loss_plot_ticks_are_plain_numbers(losses, monkeypatch, tmp_path):
    """No offset ('+1.234') or exponent ('1e-3') beside an axis: every tick label is the number."""
    kept = _figure(monkeypatch)
    rows = [{"step": 100_000 + 1000 * i, "loss_g": v, "loss_d": v} for i, v in enumerate(losses)]
    plot_losses(rows, tmp_path / "loss.png")
    fig = kept["fig"]
    fig.canvas.draw()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", axis
            labels = [t.get_text() for t in axis.get_ticklabels() + axis.get_ticklabels(minor=True)]
            assert labels and not any("e" in s or "times" in s or "^" in s for s in labels), labels


def test_eval_plot_ticks_are_plain_numbers(monkeypatch, tmp_path):
    kept = _figure(monkeypatch)
    rows = [{"step": 200_000 + 500 * i, "kid": 0.00121 + 1e-6 * i, "kid_std": 1e-6, "fid": 1000.5 + 0.01 * i,
             "eval_samples": 100, "eval_reference": 100} for i in range(4)]
    plot_eval(rows, tmp_path / "eval.png")
    fig = kept["fig"]
    fig.canvas.draw()
    assert len(fig.axes) == 2  # KID and its FID twin
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", axis
            labels = [t.get_text() for t in axis.get_ticklabels()]
            assert labels and not any("e" in s for s in labels), labels


# ---- facegen eval's printed summary ---------------------------------------------------------


def _result(uniqueness=0.25, roll=1.5):
    identity = {"n_generated": 16, "faces_generated": 3 if uniqueness is not None else 0, "n_train": 40, "faces_train": 30}
    if uniqueness is not None:
        identity["uniqueness"] = uniqueness
    return {"reference": {"overlap": {"checked": False, "note": "not a run: overlap not checked"}},
            "metrics": {"kid": {"value": 0.04237, "std": 0.001, "n_generated": 16, "n_reference": 40},
                        "fid": {"value": 106.1234, "n_generated": 16, "n_reference": 40},
                        "memorization": {"inception": {"copy_share": 0.0}, "pixels": {"copy_share": 0.0625},
                                         "identity": identity},
                        "faces": {"generated": {"n": 16, "one_face_share": 0.0 if roll is None else 0.5,
                                                "no_face_share": 1.0 if roll is None else 0.5},
                                  "reference": {"n": 40, "one_face_share": 0.9, "no_face_share": 0.1},
                                  "wasserstein1": {"roll_deg": roll}}},
            "out": "x"}


def test_eval_summary_prints_one_number_format():
    import re

    from facegen.cli import _eval_lines

    lines = _eval_lines(_result())
    figures = [re.findall(r"^\S+(?: \S+)?\s+(-?\d+\.\d+)  \(", line) for line in lines[1:]]
    assert all(len(f) == 1 and re.fullmatch(r"-?\d+\.\d{4}", f[0]) for f in figures), lines
    assert any("106.1234" in line for line in lines) and any("0.0424" in line for line in lines)
    assert any(line.startswith("uniqueness") and "0.2500" in line and "share of the 3 of 16 samples with a face found" in line
               for line in lines)


def test_eval_summary_leaves_out_what_was_not_measured_and_says_why():
    from facegen.cli import _eval_lines

    text = "\n".join(_eval_lines(_result(uniqueness=None, roll=None)))
    assert "nan" not in text.lower(), text
    assert "not measured identity uniqueness: faces found in 0 of 16 generated" in " ".join(text.split())
    assert "roll W1: a face found in 0.0000 of generated" in text
    assert not any(line.startswith(("uniqueness", "roll W1")) for line in text.splitlines())


def test_face_report_on_pictures_without_faces_warns_nothing():
    """No face in any generated picture (noise, a young model) is a result, not a numpy warning."""
    import warnings

    import numpy as np

    from facegen.evaluate import face_report

    none_found = np.array([[0] + [np.nan] * 5] * 4)
    reference = np.array([[1, 2.0, 0.3, 0.4, 0.7, 0.4], [1, -1.0, 0.31, 0.41, 0.69, 0.41]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary, png = face_report(none_found, reference)
    assert summary["wasserstein1"]["roll_deg"] is None and png.startswith(b"\x89PNG")


def test_is_is_not_offered_by_eval_help_nor_choices():
    from typer.testing import CliRunner

    from facegen.cli import app
    from facegen.evaluate import ALL_METRICS, parse_metrics
    from facegen.utils import FacegenError

    assert "is" not in ALL_METRICS
    help_text = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    assert "fid,kid,pr,dc,mem,faces" in help_text and "is:" not in help_text
    with pytest.raises(FacegenError, match="Inception Score is unavailable"):
        parse_metrics("kid,is")


# ---- facegen compare -------------------------------------------------------------------------


def _report(name, kid, sampler=None, steps=None, psi=1.0):
    """A metrics.json with every column of the table, sampled with these settings (None: no record)."""
    ref = {"content_hash": "ab" * 32, "split": "holdout"}
    n = {"n_generated": 100, "n_reference": 100}
    metrics = {"fid": {"value": 50.0 + kid, **n}, "kid": {"value": kid / 1000, **n},
               **{m: {"value": 0.5, **n, "k": 3} for m in ("precision", "recall", "density", "coverage")},
               "memorization": {"inception": {"copy_share": 0.0, "n_generated": 100}, "pixels": {"copy_share": 0.01, "n_generated": 100},
                                "identity": {"uniqueness": 0.9, "n_generated": 100}, "train_count": 500},
               "faces": {"generated": {"one_face_share": 0.95, "n": 100}}}
    source = {"kind": "run", "name": name}
    if sampler:
        source["samples"] = {"model": {"family": "ddpm", "resolution": 64},
                             "settings": {"eta": 0.0, "psi": psi, "sampler": sampler, "steps": steps}}
    return {"source": source, "reference": ref, "feature_network": {"sha256": "cd" * 32, "resize": "bicubic"}, "metrics": metrics}


def _write(tmp_path, folder, report):
    import json

    (tmp_path / folder).mkdir()
    (tmp_path / folder / "metrics.json").write_text(json.dumps(report))
    return tmp_path / folder


def test_compare_rows_are_model_and_sampling_settings(tmp_path):
    from facegen.metrics.compare import compare

    paths = [_write(tmp_path, "a", _report("00001-ffhq64-ddpm-seed0", 10, "ddim", 50)),
             _write(tmp_path, "b", _report("00002-ffhq64-ddpm-seed1", 20, "ddim", 50)),
             _write(tmp_path, "c", _report("00001-ffhq64-ddpm-seed0", 30, "ddpm", 1000)),
             _write(tmp_path, "d", _report("gan64", 40, "none", 1, psi=0.7)),
             _write(tmp_path, "e", _report("folder", 5))]
    table = compare(paths, show=False)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table.splitlines() if line.startswith("| ")}
    assert rows["ffhq64-ddpm (sampler ddim, steps 50)"] == ["2", "65.00 ± 7.07", "15.00 ± 7.07"]  # seeds, FID, KID x1e3
    assert rows["ffhq64-ddpm (sampler ddpm, steps 1000)"] == ["1", "80.00", "30.00"]
    assert rows["gan64"][0] == "1" and rows["folder"][0] == "1"  # one setting per name: the name alone


def test_compare_table_fits_80_columns_and_keeps_the_daggers(tmp_path, capsys, monkeypatch):
    from facegen.metrics.compare import compare

    monkeypatch.setenv("COLUMNS", "80")
    odd = _report("00003-ffhq64-ddpm-seed2", 25, "ddim", 50)
    odd["metrics"]["kid"]["n_generated"] = 99
    paths = [_write(tmp_path, "a", _report("00001-ffhq64-ddpm-seed0", 10, "ddim", 50)),
             _write(tmp_path, "b", _report("00002-ffhq64-ddpm-seed1", 20, "ddim", 50)),
             _write(tmp_path, "c", odd),
             _write(tmp_path, "d", _report("00001-ffhq64-ddpm-seed0", 30, "ddpm", 1000))]
    table = compare(paths)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for title in ("FID", "KID x1e3", "prec", "copy px", "uniq", "1 face"):
        assert title in out, title
    assert "copy px = copies (pixels)" in " ".join(out.split())
    assert "15.00 ± 7.07 / 25.00†1" in table and "†1" in out  # another engineer's protocol marks stay
    assert "ffhq64-ddpm" in out and "steps 1000" in " ".join(out.split())


# ---- --help ----------------------------------------------------------------------------------


def _commands():
    """(path, click command) of every facegen command."""
    import typer

    from facegen.cli import app

    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])
            else:
                yield [*path, name], command

    return list(walk(typer.main.get_command(app), []))


def test_help_prose_is_not_hard_wrapped_and_examples_are_indented_alike():
    """rich wraps --help at the terminal's width: a line break inside a prose paragraph shows as a
    ragged line; example lines all start 4 spaces in, long ones continued ( \\) 8 spaces in."""
    for path, command in _commands():
        for paragraph in command.help.split("\n\n"):
            lines = paragraph.split("\n")
            if not any(line.startswith(" ") for line in lines):
                assert len(lines) == 1, (path, paragraph)
                continue
            for k, line in enumerate(lines):
                continued = k and lines[k - 1].endswith(" \\")
                indent = 8 if continued else 4
                assert line[:indent].strip() == "" and line[indent] != " ", (path, line)
                assert len(line) <= 78, (path, line)


def test_help_fits_80_columns(monkeypatch):
    from typer.testing import CliRunner

    from facegen.cli import app

    for path, _ in _commands():
        out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}).output
        assert out and max(len(line) for line in out.splitlines()) <= 80, path
        description = out.split("╭")[0]
        # no example wrapped by rich to the margin: each line of an example is 4 or 8 spaces in
        assert not any(line.startswith(" --") for line in description.splitlines()), (path, description)


def test_sampling_options_are_declared_once_for_sample_eval_sweep_and_serve():
    import typing

    from facegen import cli

    commands = [cli.sample_command, cli.eval_command, cli.sweep_command, cli.serve_command]
    hints = [typing.get_type_hints(c, include_extras=True) for c in commands]
    for name, shared in (("sampler", cli.Sampler), ("steps", cli.Steps), ("negative_prompt", cli.NegativePrompt)):
        assert all(h[name] is shared for h in hints if name in h), name
    assert all(h["sampler"] is cli.Sampler and h["steps"] is cli.Steps for h in hints)
    assert hints[0]["truncation"] is hints[1]["truncation"] is cli.Truncation and hints[3]["truncation"] is cli.DefaultTruncation
    assert hints[0]["prompt"] is hints[1]["prompt"] is hints[2]["prompt"] is cli.Prompt
