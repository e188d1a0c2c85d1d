"""What a training run writes besides checkpoints: metrics.jsonl, loss.png, sample grids, the strip.

    RUN/metrics.jsonl           one JSON line per `log_every` steps (step, kimg, losses, lr, img/s), and
                                one per `eval_every` steps (step, kid, kid_std, [fid], eval_samples, ...)
    RUN/loss.png                the loss curves from metrics.jsonl
    RUN/eval.png                KID (and FID) against step, from the evaluation rows
    RUN/samples/step-XXXXXX.png the fixed-seed grid at that step
    RUN/samples/strip.png       the first row of every grid, oldest at the top: the same seeds through training
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facegen.utils import atomic_write_text, make_grid, save_png

STRIP_MAX_ROWS = 24  # older snapshots are thinned out evenly beyond this
GRID_PAD = 2


class MetricsLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (logged after the checkpoint a run resumes from)."""
        if self.path.is_file():
            rows = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            atomic_write_text(self.path, "".join(r + "\n" for r in rows))

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line] if self.path.is_file() else []


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: training runs on servers
    import matplotlib.pyplot as plt

    return plt


def _plain_ticks(*axes) -> None:
    """Tick labels as written numbers: no '1e-3' exponent or '+1.234' offset beside the axis,
    which hides the values (a loss of 0.0012 read as 1.2); log axes say 0.001, not 10^-3."""
    from matplotlib.ticker import LogFormatter, ScalarFormatter

    class PlainLog(LogFormatter):  # LogFormatter's choice of which ticks to label, written out
        def _num_to_string(self, x, vmin, vmax):
            return np.format_float_positional(x, precision=6, trim="-")

    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(PlainLog())
                axis.set_minor_formatter(PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            else:
                formatter = ScalarFormatter(useOffset=False)
                formatter.set_scientific(False)
                axis.set_major_formatter(formatter)


def _save_figure(fig, out: Path) -> None:
    import io

    from facegen.utils import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    atomic_write_bytes(out, buf.getvalue())


def plot_losses(rows: list[dict], out: Path) -> None:
    """loss.png: every loss-like column against step, log-scaled when all positive."""
    plt = _pyplot()
    rows = [r for r in rows if any(k.startswith("loss") for k in r)]  # not the evaluation rows: they would break the lines
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key, linewidth=1)
    if rows and all(r.get(k, 1) > 0 for r in rows for k in keys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend()
    _plain_ticks(ax)
    _save_figure(fig, out)


def plot_eval(rows: list[dict], out: Path) -> None:
    """eval.png: KID (mean, bar = std over its subsets) against step, FID on a second axis where measured."""
    plt = _pyplot()
    rows = [r for r in rows if "kid" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.errorbar([r["step"] for r in rows], [r["kid"] for r in rows], yerr=[r["kid_std"] for r in rows],
                marker="o", markersize=3, capsize=2, linewidth=1, color="C0", label="KID")
    ax.set_xlabel("step")
    ax.set_ylabel("KID", color="C0")
    ax.grid(alpha=0.3)
    _plain_ticks(ax)
    with_fid = [r for r in rows if r.get("fid") is not None]
    if with_fid:
        twin = ax.twinx()
        twin.plot([r["step"] for r in with_fid], [r["fid"] for r in with_fid], marker="s", markersize=3, linewidth=1, color="C1")
        twin.set_ylabel("FID", color="C1")
        _plain_ticks(twin)
    if rows:
        last = rows[-1]
        ax.set_title(f"EMA weights: {last['eval_samples']} samples vs {last['eval_reference']} held-out faces", fontsize=10)
    _save_figure(fig, out)


def save_samples(samples_dir: Path, step: int, images: np.ndarray) -> Path:
    """Write the grid of this step and rebuild strip.png from every grid so far."""
    samples_dir = Path(samples_dir)
    nrow = int(np.ceil(np.sqrt(len(images))))
    path = samples_dir / f"step-{step:06d}.png"
    save_png(path, make_grid(images, nrow=nrow, pad=GRID_PAD))
    save_png(samples_dir / "strip.png", make_strip(samples_dir, images.shape[1]))
    return path


def make_strip(samples_dir: Path, image_size: int) -> np.ndarray:
    """Stack the first row of each step-*.png grid (sorted by step), thinned to STRIP_MAX_ROWS."""
    from PIL import Image

    grids = sorted(Path(samples_dir).glob("step-*.png"))
    if len(grids) > STRIP_MAX_ROWS:  # keep the first and last, evenly spaced between
        keep = np.linspace(0, len(grids) - 1, STRIP_MAX_ROWS).round().astype(int)
        grids = [grids[i] for i in sorted(set(keep))]
    row_height = image_size + GRID_PAD
    rows = [np.asarray(Image.open(g).convert("RGB"))[:row_height] for g in grids]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    bottom = np.full((GRID_PAD, width, 3), 255, dtype=np.uint8)
    return np.concatenate([*rows, bottom])
