"""Executable docs: every ```sh / ```bash block of README.md and docs/*.md runs as written.

A doc's blocks run in order in one temporary working folder (they build on each other:
prepare -> train -> sample -> eval), each block as a bash script, so loops, globs and `$seed`
behave as in a user's shell. `facegen` in those scripts is a shell function that hands its
arguments to this test process, which applies the size overrides below and runs the real
CLI (`facegen.cli.main`) in-process: the Inception network stays loaded between commands.
Other commands (`python -c ...`) run as written, with this virtual environment first on PATH.

A block that is not meant to run as written (GPU-only, a benchmark, a download, `make ...`)
carries a visible marker on the line before its fence:

    <!-- not run: the reason -->

so skipping a block is a decision written in the doc, never a silent one. Fenced blocks
without a language and indented blocks must not hold commands (tag them ```sh, or mark them),
and the number of runnable and marked blocks per doc is pinned in EXPECTED_BLOCKS, so a
parser regression cannot make this test pass vacuously.

A failure names the doc, the line and the command as written, the command as run (after the
overrides) and the end of its output.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

# (runnable, marked "not run") fenced shell blocks per doc. A new doc, or a block added,
# removed or marked, changes these counts: update them with the doc.
EXPECTED_BLOCKS = {
    "README.md": (5, 1),
    "docs/DESIGN.md": (0, 0),
    "docs/alignment.md": (0, 1),
    "docs/evaluation.md": (0, 1),
    "docs/gan.md": (2, 4),
    "docs/latent-diffusion.md": (1, 1),
    "docs/scaling.md": (0, 2),
    "docs/serve.md": (0, 1),
    "docs/stable-diffusion.md": (1, 4),
    "docs/training.md": (3, 3),
}

# ---- the size overrides: everything the test changes in a doc's commands -----------------
#
# Counts (eval/sample/sweep --n, prepare --holdout, eval --mem-pool) shrink by SCALE, rounded
# down, but never below FLOOR (nor above what the doc asked). The FID minimum of
# facegen.evaluate shrinks by the same factor (2,048 -> 8, an exact division; FLOOR < 8), so a count
# that FID would refuse at the doc's size is refused at the test's size too: "--n 10000
# against a 1,000-face holdout" fails here as it fails for a user.
SCALE = 256
FLOOR = 6   # the fewest pictures every metric computes on (density/coverage: k = 5 neighbours)
EVALUATE_CONSTANTS = {  # facegen.evaluate's module constants, divided by SCALE like the counts
    "FID_MIN_SAMPLES": 2048 // SCALE,          # 8
    "FID_WARN_SAMPLES": 10_000 // SCALE,       # 39
    "DEFAULT_RUN_SAMPLES": 10_000 // SCALE,    # eval of a run without --n: 39 samples
    "IDENTITY_MAX_GENERATED": FLOOR,           # dlib identities, ~0.2 s a face on a CPU
    "IDENTITY_MAX_TRAIN": FLOOR,
    "FID_BOOTSTRAP_ROUNDS": 2,                 # FID's interval: 2 resamples, not 50 (each is seconds of 2048-d eigh, at any count)
}
# Photo folders named in the docs -> (test face folder fixture, photos the doc's folder holds).
# `data prepare` gets --limit = those photos (or the doc's own --limit) / SCALE, kept within
# LIMIT_RANGE: at least enough for a holdout and a training split, at most what evaluation's
# memorization search (Inception features of the whole train split) does in seconds.
SOURCES = {
    "../shared/data/celeba-10k": ("celeba_dir", 10_000),
    "../shared/data/utkface": ("utk_dir", 23_707),
    "~/celeba/img_align_celeba": ("celeba_dir", 202_599),   # all of CelebA
}
LIMIT_RANGE = (48, 128)
TRAIN_STEPS_SCALE = 3000   # train --steps N -> ceil(N / 3000) (so --resume --steps keeps going past the first run)
TRAIN_STEPS_DEFAULT = 2    # train without --steps (the preset's thousands): 2 steps; --resume without --steps: as written
TRAIN_CONFIG = ["sample_seeds=0-3"]  # train: the grids (at least one, at the end) show 4 faces, not the presets' 16-64
TRAIN_BATCH = 8            # train: batch_size=8 where the preset's is larger (gan-resnet64's 64 is a minute a step here)
EVAL_SAMPLER_STEPS = 4     # eval of a diffusion run without --steps: 4 sampler steps, not the model's 50
# FID (facegen eval, rFID of the ae export, KID/FID during training) is computed by the same
# formula in the span of the features (below): exact, but without the 2048-d eigendecompositions
# that take 20 s each on a busy 2-core CPU whatever the count.
# The config override eval_samples=N of `facegen train` (KID during training) shrinks like --n.
# `data prepare` also gets --workers 1 (no process pool forked from the test process), and
# `facegen serve` starts for real up to the point of listening: instead of uvicorn.run, the
# app answers /healthz and /face.png?seed=0 through a test client, then the command returns.


class _FactorCov:
    """A covariance kept as its factor X (rows: centred features / sqrt(n - 1)), S = X^T X."""

    def __init__(self, x):
        self.x = x


def factor_gaussian_stats(features):
    """Stands in for facegen.metrics.fid.gaussian_stats: the mean and the covariance's factor."""
    import numpy as np

    x = np.asarray(features, dtype=np.float64)
    mu = x.mean(axis=0)
    return mu, _FactorCov((x - mu) / np.sqrt(max(len(x) - 1, 1)))


def factor_frechet_distance(real):
    """facegen.metrics.fid.frechet_distance for factored covariances: the eigenvalues of
    S_a S_b = Xa^T Xa Xb^T Xb are the squared singular values of Xa Xb^T (n_a x n_b), so
    tr((S_a S_b)^1/2) is that small matrix's nuclear norm. Other arguments go to `real`."""
    import numpy as np

    def frechet_distance(mu_a, sigma_a, mu_b, sigma_b, *args, **kwargs):
        if not isinstance(sigma_a, _FactorCov):
            return real(mu_a, sigma_a, mu_b, sigma_b, *args, **kwargs)
        diff = np.asarray(mu_a) - np.asarray(mu_b)
        tr_covmean = np.linalg.svd(sigma_a.x @ sigma_b.x.T, compute_uv=False).sum()
        return float(diff @ diff + (sigma_a.x ** 2).sum() + (sigma_b.x ** 2).sum() - 2 * tr_covmean)

    return frechet_distance


def scaled(n: int) -> int:
    return max(n // SCALE, min(n, FLOOR))


def _option(argv: list[str], name: str) -> int | None:
    """Index of the value of --name in argv (also --name=value, split first), or None."""
    return argv.index(name) + 1 if name in argv and argv.index(name) + 1 < len(argv) else None


def _scale_option(argv: list[str], name: str, fn) -> None:
    i = _option(argv, name)
    if i is not None and argv[i].isdigit():
        argv[i] = str(fn(int(argv[i])))


def _has_sampler_steps(source: str) -> bool:
    """Whether SOURCE is a run or model folder whose export has a step count (diffusion)."""
    for meta in (Path(source) / "model" / "facegen.json", Path(source) / "facegen.json"):
        if meta.is_file():
            return "steps" in json.loads(meta.read_text())
    return False


def _preset_batch(preset: str) -> int:
    from facegen.config import load_config

    try:
        return load_config(preset)["batch_size"]
    except Exception:  # not a preset: let `facegen train` say why
        return 0


def apply_overrides(argv: list[str], folders: dict[str, Path]) -> list[str]:
    """The doc's `facegen` arguments -> the arguments the test runs (see the table above)."""
    argv = [part for a in argv for part in (a.split("=", 1) if a.startswith("--") and "=" in a else [a])]
    command = argv[:2] if argv[:1] == ["data"] else argv[:1]
    if command == ["data", "prepare"]:
        photos = 0
        for i, arg in enumerate(argv):
            for doc_path, (fixture, count) in SOURCES.items():
                if arg in (doc_path, os.path.expanduser(doc_path)):
                    argv[i], photos = str(folders[fixture]), photos + count
        i = _option(argv, "--limit")
        if i is None:
            argv += ["--limit", str(photos or LIMIT_RANGE[1] * SCALE)]
            i = len(argv) - 1
        argv[i] = str(min(max(int(argv[i]) // SCALE, LIMIT_RANGE[0]), LIMIT_RANGE[1]))
        _scale_option(argv, "--holdout", scaled)
        if "--workers" not in argv:
            argv += ["--workers", "1"]
    elif command in (["sample"], ["eval"], ["sweep"]):
        _scale_option(argv, "--n", scaled)
        _scale_option(argv, "--mem-pool", lambda n: max(2, scaled(n)))
        if command == ["eval"] and "--steps" not in argv and _has_sampler_steps(argv[1]):
            argv += ["--steps", str(EVAL_SAMPLER_STEPS)]
    elif command == ["train"]:
        if "--steps" in argv:
            _scale_option(argv, "--steps", lambda n: math.ceil(n / TRAIN_STEPS_SCALE))
        elif "--resume" not in argv and "--dry-run" not in argv:
            argv += ["--steps", str(TRAIN_STEPS_DEFAULT)]
        argv = [f"eval_samples={scaled(int(a.split('=', 1)[1]))}" if re.fullmatch(r"eval_samples=\d+", a) else a for a in argv]
        if "--dry-run" not in argv:
            argv += TRAIN_CONFIG
            if "--resume" not in argv and _preset_batch(argv[1]) > TRAIN_BATCH:
                argv.append(f"batch_size={TRAIN_BATCH}")
    return argv


def test_overrides_table():
    """The overrides keep FID's verdict (a count FID refuses at doc size is refused at test
    size) and its value (the factored FID is the real one)."""
    import numpy as np

    from facegen.metrics import fid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 64)), rng.normal(0.3, 1.2, size=(20, 64)) @ rng.normal(size=(64, 64)) / 8
    fast = factor_frechet_distance(fid.frechet_distance)(*factor_gaussian_stats(a), *factor_gaussian_stats(b))
    assert fast == pytest.approx(fid.fid_from_features(a, b), rel=1e-6)
    fid_min = EVALUATE_CONSTANTS["FID_MIN_SAMPLES"]
    for n in (1, 8, 500, 1000, 2047, 2048, 2049, 2500, 2900, 5000, 10_000, 50_000):
        assert (scaled(n) >= fid_min) == (n >= 2048), n
    folders = {"celeba_dir": Path("/faces/celeba"), "utk_dir": Path("/faces/utk")}
    assert apply_overrides(["data", "prepare", "../shared/data/celeba-10k", "../shared/data/utkface", "--out", "s",
                            "--holdout", "5000"], folders) == \
        ["data", "prepare", "/faces/celeba", "/faces/utk", "--out", "s", "--holdout", "19", "--limit", "128", "--workers", "1"]
    assert apply_overrides(["data", "prepare", os.path.expanduser("~/celeba/img_align_celeba"), "--out", "s",
                            "--limit=512", "--holdout", "1000"], folders)[2:] == \
        ["/faces/celeba", "--out", "s", "--limit", "48", "--holdout", "6", "--workers", "1"]
    assert apply_overrides(["eval", "r", "--ref", "s", "--n", "10000", "--mem-pool", "1000"], folders)[-4:] == \
        ["--n", "39", "--mem-pool", "6"]
    assert apply_overrides(["train", "p", "--data", "s", "--out", "r", "--steps", "6175"], folders)[-2] == "3"
    assert apply_overrides(["train", "p", "--data", "s", "--out", "r", "seed=1"], folders)[-3:] == ["--steps", "2", *TRAIN_CONFIG]
    assert apply_overrides(["train", "p", "--data", "s", "--out", "r", "--resume"], folders)[-2:] == ["--resume", *TRAIN_CONFIG]
    assert apply_overrides(["train", "p", "--data", "s", "--out", "r", "eval_samples=500"], folders)[6] == "eval_samples=6"


# ---- parsing the docs ---------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL = {"sh", "bash", "shell", "console"}
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(\S.*?)\s*-->\s*$")
COMMAND_LINE = re.compile(r"^\s*(\$ )?(facegen|python|python3|accelerate|torchrun|pip|make|huggingface-cli)\s")


@dataclass
class Block:
    doc: str
    line: int            # 1-based line of the block's first content line
    lang: str
    lines: list[str]
    not_run: str | None  # the marker's reason

    def command_at(self, line: int) -> str:
        """The logical command (continuation lines joined) that covers doc line `line`."""
        start = line - self.line
        if not 0 <= start < len(self.lines):
            return "?"
        while start > 0 and self.lines[start - 1].rstrip().endswith("\\"):
            start -= 1
        end = start
        while end < len(self.lines) - 1 and self.lines[end].rstrip().endswith("\\"):
            end += 1
        return " ".join(part.rstrip().rstrip("\\").strip() for part in self.lines[start:end + 1])


@dataclass
class Parsed:
    blocks: list[Block] = field(default_factory=list)   # shell-tagged fenced blocks
    untagged_commands: list[str] = field(default_factory=list)  # "doc:line: text" of commands outside them


def parse(doc: str, text: str | None = None) -> Parsed:
    lines = (ROOT / doc).read_text().splitlines() if text is None else text.splitlines()
    parsed, i = Parsed(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if re.match(r"^(    |\t)", lines[i]) and COMMAND_LINE.match(lines[i]):
                # an indented code block (after a blank line or another indented line)
                prev = lines[i - 1] if i else ""
                if not prev.strip() or re.match(r"^(    |\t)", prev):
                    parsed.untagged_commands.append(f"{doc}:{i + 1}: {lines[i].strip()} (indented code block)")
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = NOT_RUN.match(lines[k]) if k >= 0 else None
        body = lines[i + 1:j]
        if lang in SHELL or (not lang and marker):  # a marked synopsis counts as a not-run block
            parsed.blocks.append(Block(doc, i + 2, lang, body, marker.group(1) if marker else None))
        elif not lang and not marker:
            parsed.untagged_commands += [f"{doc}:{i + 2 + n}: {t.strip()} (fenced block without a language)"
                                         for n, t in enumerate(body) if COMMAND_LINE.match(t)][:1]
        i = j + 1
    return parsed


def test_parser_finds_blocks_markers_and_untagged_commands():
    text = "\n".join([
        "```sh", "facegen a \\", "  --b 1", "```",                    # 1-4: runnable
        "<!-- not run: needs a GPU -->", "", "```bash", "facegen c", "```",   # 5-9: marked
        "```", "facegen d", "```",                                     # 10-12: untagged command
        "```", "photos -> store", "```",                               # 13-15: a diagram
        "text:", "", "    facegen e",                                  # 16-18: indented command
    ])
    parsed = parse("x.md", text)
    assert [(b.line, b.lang, b.not_run) for b in parsed.blocks] == [(2, "sh", None), (8, "bash", "needs a GPU")]
    assert parsed.blocks[0].command_at(3) == "facegen a --b 1"
    assert [u.split(" (")[0] for u in parsed.untagged_commands] == ["x.md:11: facegen d", "x.md:18: facegen e"]


def test_every_command_block_is_run_or_marked():
    """Pins the block counts (the test cannot become vacuous) and refuses commands outside
    shell-tagged blocks (they would escape it)."""
    found, untagged = {}, []
    for doc in DOCS:
        parsed = parse(doc)
        found[doc] = (sum(b.not_run is None for b in parsed.blocks), sum(b.not_run is not None for b in parsed.blocks))
        untagged += parsed.untagged_commands
    assert not untagged, ("commands outside ```sh blocks (tag the block ```sh, or put <!-- not run: reason --> "
                          "before it):\n" + "\n".join(untagged))
    assert found == EXPECTED_BLOCKS, "runnable / not-run shell blocks per doc changed: update EXPECTED_BLOCKS with the doc"
    assert sum(runnable for runnable, _ in found.values()) >= 10


# ---- running a doc ---------------------------------------------------------------------------

CLIENT = r'''
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["FACEGEN_DOCS_SOCKET"])
s.sendall(json.dumps({"line": int(sys.argv[1]), "argv": sys.argv[2:], "cwd": os.getcwd()}).encode() + b"\n")
data = b""
while chunk := s.recv(1 << 16):
    data += chunk
r = json.loads(data)
sys.stdout.write(r["stdout"]); sys.stdout.flush(); sys.stderr.write(r["stderr"])
sys.exit(r["code"])
'''

PRELUDE = r'''
set -e -o pipefail
facegen() { "$FACEGEN_DOCS_PYTHON" "$FACEGEN_DOCS_CLIENT" "${BASH_LINENO[0]}" "$@"; }
trap 'echo "DOCS-TEST-FAILED line $LINENO: $BASH_COMMAND" >&2' ERR
'''


@dataclass
class Call:
    line: int
    argv: list[str]
    ran: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(("    " + t) for t in text.rstrip().splitlines()[-n:])


def probe_instead_of_listening(app, host="127.0.0.1", port=8000, **kwargs):
    """Stands in for uvicorn.run: the page's app answers as it would on host:port, then returns."""
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        for path in ("/healthz", "/face.png?seed=0", "/"):
            r = client.get(path)
            assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:200]}"
    print(f"(docs test) served /healthz, /face.png?seed=0 and / instead of listening on {host}:{port}")


def run_block(block: Block, work: Path, env: dict, sock_path: str, serve_call) -> list[Call]:
    """Run one block with bash in `work`; returns its facegen calls; fails the test on an error."""
    script = work.parent / f"block-{block.line}.sh"
    prelude = work.parent / "prelude.sh"
    prelude.write_text(PRELUDE)
    # Line n of the script is line n of the doc, so bash's line numbers are the doc's.
    script.write_text(f"source {shlex.quote(str(prelude))}\n" + "\n" * (block.line - 2) + "\n".join(block.lines) + "\n")
    calls: list[Call] = []
    log = work.parent / f"block-{block.line}.log"
    with socket.socket(socket.AF_UNIX) as server, open(log, "w+") as out:
        server.bind(sock_path)
        server.listen(1)
        server.settimeout(0.2)
        try:
            proc = subprocess.Popen(["bash", str(script)], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
            while True:
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    if proc.poll() is not None:
                        break
                    continue
                with conn:
                    conn.settimeout(None)
                    request = json.loads(conn.makefile("rb").readline())
                    call = serve_call(request)
                    calls.append(call)
                    conn.sendall(json.dumps({"code": call.code, "stdout": call.stdout, "stderr": call.stderr}).encode())
        finally:
            os.unlink(sock_path)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        failed = calls[-1] if calls and calls[-1].code != 0 else None
        m = re.search(r"DOCS-TEST-FAILED line (\d+): (.*)", output)
        line = failed.line if failed else int(m.group(1)) if m else block.line
        message = [f"{block.doc}:{line}: {block.command_at(line)}"]
        if failed:
            message += [f"  ran as: facegen {shlex.join(failed.ran)}", f"  exit status {failed.code}; its output ends:",
                        _tail(failed.stdout + failed.stderr)]
        else:
            message += [f"  exit status {proc.returncode} (bash); the block's output ends:", _tail(output)]
        pytest.fail("\n".join(message), pytrace=False)
    return calls


def runnable_docs() -> list[str]:
    return [doc for doc in DOCS if any(b.not_run is None for b in parse(doc).blocks)]


@pytest.mark.slow
@pytest.mark.parametrize("doc", runnable_docs())
def test_doc_commands_run(doc, facegen, celeba_dir, utk_dir, tmp_path, monkeypatch):
    import torch
    import uvicorn

    from facegen import evaluate
    from facegen.metrics import fid

    for name, value in EVALUATE_CONSTANTS.items():
        assert hasattr(evaluate, name), f"facegen.evaluate.{name} is gone: update EVALUATE_CONSTANTS"
        monkeypatch.setattr(evaluate, name, value)
    monkeypatch.setattr(uvicorn, "run", probe_instead_of_listening)
    monkeypatch.setattr(fid, "frechet_distance", factor_frechet_distance(fid.frechet_distance))
    monkeypatch.setattr(fid, "gaussian_stats", factor_gaussian_stats)
    threads = torch.get_num_threads()  # presets set it (threads: 1); restored afterwards

    folders = {"celeba_dir": celeba_dir, "utk_dir": utk_dir}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cache = tmp_path / "cache"
    (tmp_path / "client.py").write_text(CLIENT)
    sock_dir = tempfile.mkdtemp(prefix="fgdocs")  # AF_UNIX paths must stay short
    env = {**os.environ, "FACEGEN_DOCS_PYTHON": sys.executable, "FACEGEN_DOCS_CLIENT": str(tmp_path / "client.py"),
           "FACEGEN_DOCS_SOCKET": f"{sock_dir}/s", "FACEGEN_CACHE": str(cache),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    monkeypatch.setenv("FACEGEN_CACHE", str(cache))

    timings: list[str] = []

    def serve_call(request: dict) -> Call:
        os.chdir(request["cwd"])
        ran = apply_overrides(list(request["argv"]), folders)
        started = time.perf_counter()
        try:
            result = facegen(*ran)
            code = result.returncode if isinstance(result.returncode, int) else (0 if result.returncode is None else 1)
            stdout, stderr = result.stdout, result.stderr
        except Exception:  # a crash: report it like the command line would, keep serving
            code, stdout, stderr = 1, "", traceback.format_exc()
        finally:
            os.chdir(work)
        call = Call(request["line"], request["argv"], ran, code, stdout, stderr, time.perf_counter() - started)
        timings.append(f"{doc}:{call.line}: {call.seconds:5.1f} s  exit {code}  facegen {shlex.join(ran)}")
        if os.environ.get("FACEGEN_DOCS_VERBOSE"):  # progress on the terminal, past pytest's capture
            print(timings[-1], file=sys.__stderr__, flush=True)
        return call

    try:
        for block in parse(doc).blocks:
            if block.not_run is not None:
                continue
            run_block(block, work, env, f"{sock_dir}/s", serve_call)
    finally:
        torch.set_num_threads(threads)
        os.rmdir(sock_dir)
        print("\n".join(timings))
