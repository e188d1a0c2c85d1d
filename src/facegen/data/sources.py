"""Where photos come from: a folder (recursive), a .zip / .tar(.gz) archive, the official
CelebA layout inside either, or a Hugging Face dataset `hf:NAME[:SPLIT]`.

A source lists its files by name (sorted, so `--limit N` means the same N files everywhere)
and reads their raw bytes; decoding happens later in worker processes. A file that cannot
even be read yields a Skip instead of bytes, so one bad file never stops the others.
The names are kept on disk (data/names.py), so a source of millions of files costs the main
process (and the workers it forks) about a byte a file, not a list of strings.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from facegen.data.names import Names
from facegen.data.transforms import Skip
from facegen.utils import FacegenError

Payload = bytes | Skip  # raw file bytes, or why they could not be read

# CelebA's list_eval_partition: 0 train, 1 val, 2 test (Liu et al., ICCV 2015).
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}
CELEBA_IMAGES = "img_align_celeba/"
SPLITS = ("train", "val", "test")  # Source.splits holds the index of a file's split in this
UNLISTED = 255  # Source.splits of an image missing from list_eval_partition
LOOKUP_NAMES = 1 << 14  # image names matched to the partition list at a time


class Source:
    """A set of named files. Subclasses set `kind`, `location`, `names` and implement read()."""

    kind: str
    location: str
    names: Names  # every candidate file, sorted
    splits: np.ndarray | None = None  # uint8 per name: its store split, SPLITS[code] (UNLISTED: none); CelebA layout only

    def read(self, names: Names) -> Iterator[tuple[str, Payload]]:
        """(name, bytes) for each of `names` (sorted, a subset of self.names), in whatever order is
        cheapest for the source."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "location": self.location, "files": len(self.names)}


def open_source(src: str | Path) -> Source:
    """Pick the source type from SRC; apply the CelebA layout when the files follow it."""
    text = str(src)
    if text.startswith("hf:"):
        from facegen.data.hf_source import HFSource

        return HFSource(text[3:])
    path = Path(src)
    if not path.exists():
        raise FacegenError(f"{path}: no such folder or archive; give a folder of photos, a .zip/.tar(.gz) or hf:NAME")
    if path.is_dir():
        source: Source = FolderSource(path)
    elif zipfile.is_zipfile(path):
        source = ZipSource(path)
    elif _is_tar(path):
        source = TarSource(path)
    else:
        raise FacegenError(f"{path}: not a folder, .zip or .tar(.gz) archive; give a folder of photos or an archive of them")
    if not source.names:
        raise FacegenError(f"{path} holds no files; point SRC at a folder or archive of face photos")
    apply_celeba_layout(source)
    return source


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _visible(name: str) -> bool:
    """Hidden files and macOS archive junk (.DS_Store, __MACOSX/) are not photos."""
    return not any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _walk(root: Path) -> Iterator[str]:
    """The visible files under `root` as relative posix names, one at a time (no list of a
    folder's entries is built: a flat folder of a million photos costs nothing here), in no
    particular order. The files os.walk(root) lists: a link to a folder is not followed, an
    unreadable folder is passed over."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = os.scandir(os.path.join(root, rel) if rel else root)
        except OSError:
            continue
        with entries:
            while True:
                try:
                    entry = next(entries)
                except (StopIteration, OSError):  # OSError: as os.walk, a folder that fails mid-listing ends there
                    break
                if not _visible(entry.name):
                    continue
                name = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if not is_dir:
                    yield name
                    continue
                try:
                    is_link = entry.is_symlink()
                except OSError:
                    is_link = False
                if not is_link:
                    stack.append(name)


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: Path):
        self.root, self.location = root, str(root.resolve())
        self.names = Names.sorted(_walk(root))

    def read(self, names):
        for name in names:
            try:
                yield name, (self.root / name).read_bytes()
            except OSError as e:
                yield name, Skip(f"unreadable file ({e.strerror or e})")


class ZipSource(Source):
    kind = "zip"

    def __init__(self, path: Path):
        self.location = str(path.resolve())
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise FacegenError(f"{path}: unreadable zip archive ({e}); check the download") from None
        self.names = Names.sorted(i.filename for i in self.zip.infolist() if not i.is_dir() and _visible(i.filename))

    def read(self, names):
        for name in names:
            try:
                yield name, self.zip.read(name)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                yield name, Skip(f"damaged archive member ({e})")


class TarSource(Source):
    kind = "tar"

    def __init__(self, path: Path):
        self.location = str(path.resolve())
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {m.name: m for m in self.tar.getmembers() if m.isfile() and _visible(m.name)}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise FacegenError(f"{path}: unreadable tar archive ({e}); check the download") from None
        self.names = Names.sorted(self.members)

    def read(self, names):
        # Archive order, not name order: a .tar.gz can only be read forwards cheaply.
        for member in self.members.values():
            if member.name in names:
                try:
                    yield member.name, self.tar.extractfile(member).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    yield member.name, Skip(f"damaged archive member ({e})")


def apply_celeba_layout(source: Source) -> None:
    """img_align_celeba/ + list_eval_partition.txt (or .csv): keep its train/val/test split.

    Only the images under img_align_celeba/ are candidates then (not the attribute files).
    Images missing from the partition list get source.splits UNLISTED; prepare skips them
    with a reason.
    """
    lists, is_image = [], np.zeros(len(source.names), dtype=bool)
    for rank, n in enumerate(source.names):
        if _basename(n) in ("list_eval_partition.txt", "list_eval_partition.csv"):
            lists.append(n)
        is_image[rank] = f"/{CELEBA_IMAGES}" in f"/{n}"
    if not lists or not is_image.any():
        return
    (_, payload), = source.read(Names.of_sorted(lists[:1]))
    if isinstance(payload, Skip):
        raise FacegenError(f"{source.location}: cannot read {lists[0]} ({payload.reason})")
    keys, codes = _partition(payload)
    del payload
    images = source.names.subset(is_image)
    del is_image
    source.kind = f"celeba-{source.kind}"
    source.names = images
    source.splits = np.full(len(images), UNLISTED, dtype=np.uint8)
    for start in range(0, len(images), LOOKUP_NAMES):
        names = [_basename(n).encode("utf-8", "surrogatepass") for n in images.between(start, start + LOOKUP_NAMES)]
        source.splits[start:start + len(names)] = _lookup(keys, codes, names)


def _basename(name: str) -> str:
    """Path(name).name, without making a Path (a million of them take seconds)."""
    base = name.rpartition("/")[2]
    return base if base not in ("", ".") else Path(name).name


def _line_blocks(text: bytes, size: int = 1 << 18) -> Iterator[bytes]:
    """`text` in pieces of about `size` bytes cut after a newline: their splitlines() are the
    lines of the whole, without holding them all at once."""
    start = 0
    while start < len(text):
        cut = text.find(b"\n", start + size)
        stop = len(text) if cut < 0 else cut + 1
        yield text[start:stop]
        start = stop


def _partition(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """list_eval_partition as sorted file names (a numpy bytes array, one per name) and their
    split codes; of a name listed twice, the last line counts (as a dict filled line by line)."""
    keys, codes = [], []
    for block in _line_blocks(payload):
        block_keys, block_codes = [], bytearray()
        for line in block.decode("utf-8", "replace").splitlines():
            parts = line.replace(",", " ").split()
            if len(parts) == 2 and parts[1] in CELEBA_SPLITS:  # also skips the csv header
                block_keys.append(parts[0].encode("utf-8", "surrogatepass"))
                block_codes.append(SPLITS.index(CELEBA_SPLITS[parts[1]]))
        if block_keys:
            keys.append(np.array(block_keys))
            codes.append(np.frombuffer(bytes(block_codes), dtype=np.uint8))
    if not keys:
        return np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.uint8)
    keys, codes = np.concatenate(keys), np.concatenate(codes)
    order = np.argsort(keys, kind="stable")  # a name's lines stay in file order: its last comes last
    keys, codes = keys[order], codes[order]
    del order
    last = np.append(keys[1:] != keys[:-1], True)
    return keys[last], codes[last]


def _lookup(keys: np.ndarray, codes: np.ndarray, names: list[bytes]) -> np.ndarray:
    """The split code of each of `names` in the sorted `keys`, UNLISTED where absent."""
    if not names or not len(keys):
        return np.full(len(names), UNLISTED, dtype=np.uint8)
    fits = np.array([len(n) <= keys.dtype.itemsize for n in names])  # a longer name would be cut to fit the array
    wanted = np.array([n if ok else b"" for n, ok in zip(names, fits)], dtype=keys.dtype)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = fits & (keys[at] == wanted)
    return np.where(found, codes[at], UNLISTED).astype(np.uint8)


class MultiSource(Source):
    """Several sources as one: each file is named "<label>/<name>", the label being the source's
    folder or archive name (made unique with its position when two share a name), so names stay
    distinct, sorted and stable whatever order the sources are given in."""

    kind = "multi"

    def __init__(self, sources: list[Source]):
        if any(s.splits is not None for s in sources):
            raise FacegenError("a CelebA layout (img_align_celeba + list_eval_partition) cannot be merged with other sources; "
                               "prepare it alone")
        labels = [Path(s.location).name or s.kind for s in sources]
        labels = [f"{i}-{label}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
        self.parts = dict(zip(labels, sources))
        self.location = " + ".join(s.location for s in sources)
        # "label/name" sorts by label first (a label holds no "/"): each source's sorted names
        # in a row, the sources in the order of "label/"
        self.names = Names.of_sorted(f"{label}/{n}" for label in self._labels_in_order() for n in self.parts[label].names)

    def _labels_in_order(self) -> list[str]:
        return sorted(self.parts, key=lambda label: f"{label}/")

    def read(self, names):
        for label in self._labels_in_order():  # a source's names are consecutive among the sorted names
            lo, hi = names.bisect_left(f"{label}/"), names.bisect_left(f"{label}0")  # "0" follows "/"
            if lo < hi:
                inner = Names.of_sorted(n[len(label) + 1:] for n in names.between(lo, hi))
                for name, payload in self.parts[label].read(inner):
                    yield f"{label}/{name}", payload

    def describe(self) -> dict:
        return {"kind": self.kind, "location": self.location, "files": len(self.names),
                "sources": {label: s.describe() for label, s in self.parts.items()}}


def open_sources(srcs: list[str | Path]) -> Source:
    """One source, or several merged (`facegen data prepare SRC1 SRC2 ...`)."""
    if not srcs:
        raise FacegenError("no SRC given; name a folder, archive or hf:NAME of face photos")
    if len(srcs) == 1:
        return open_source(srcs[0])
    resolved = [str(Path(s).resolve()) if not str(s).startswith("hf:") else str(s) for s in srcs]
    duplicate = next((s for i, s in enumerate(srcs) if resolved[i] in resolved[:i]), None)
    if duplicate is not None:
        raise FacegenError(f"{duplicate} is given twice; name each source once")
    return MultiSource([open_source(s) for s in srcs])
