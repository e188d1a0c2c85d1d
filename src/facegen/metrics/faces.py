"""Face checks on generated pictures: one face each, upright and framed like the reference?

Uses the alignment module's face check (`facegen.data.align.check_faces`: dlib HOG, number
of faces, head roll, eye positions as fractions of width/height). The distributions of
roll and eye positions are compared with the reference set's by the Wasserstein-1
distance per quantity (degrees for roll, fractions of the picture for the eyes): tilted
or badly cropped generations move these even when FID barely notices.
"""

from __future__ import annotations

import numpy as np

QUANTITIES = ("roll_deg", "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y")


def check_array(images) -> np.ndarray:
    """Face checks of a sequence of pictures -> (n, 6) float: number of faces, then
    QUANTITIES (NaN where no face). An array, so it can be cached like features."""
    from facegen.data.align import check_faces

    rows = []
    for i in range(len(images)):
        c = check_faces(np.asarray(images[i])[None])[0]
        if c.found:
            rows.append([c.num_faces, c.roll_deg, *c.left_eye, *c.right_eye])
        else:
            rows.append([0] + [np.nan] * len(QUANTITIES))
    return np.array(rows, dtype=np.float64).reshape(-1, 1 + len(QUANTITIES))


def face_summary(generated: np.ndarray, reference: np.ndarray) -> dict:
    """Share of pictures with exactly one face, and W1 distances of each quantity."""
    from scipy.stats import wasserstein_distance

    def stats(checks):
        return {"n": int(len(checks)), "one_face_share": float((checks[:, 0] == 1).mean()) if len(checks) else float("nan"),
                "no_face_share": float((checks[:, 0] == 0).mean()) if len(checks) else float("nan")}

    out = {"generated": stats(generated), "reference": stats(reference), "wasserstein1": {}}
    for j, name in enumerate(QUANTITIES, start=1):
        g, r = generated[:, j], reference[:, j]
        g, r = g[~np.isnan(g)], r[~np.isnan(r)]
        out["wasserstein1"][name] = float(wasserstein_distance(g, r)) if len(g) and len(r) else None
    return out


def face_plot(generated: np.ndarray, reference: np.ndarray) -> bytes:
    """PNG of the roll and eye-position histograms, generated over reference."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(QUANTITIES), figsize=(3.2 * len(QUANTITIES), 2.8))
    for j, (ax, name) in enumerate(zip(axes, QUANTITIES), start=1):
        g, r = generated[:, j], reference[:, j]
        g, r = g[~np.isnan(g)], r[~np.isnan(r)]
        both = np.concatenate([g, r])
        bins = np.linspace(both.min(), both.max(), 25) if len(both) and both.max() > both.min() else 10
        ax.hist(r, bins=bins, density=True, alpha=0.5, label=f"reference ({len(r)})")
        ax.hist(g, bins=bins, density=True, alpha=0.5, label=f"generated ({len(g)})")
        ax.set_title(name.replace("_", " "), fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
