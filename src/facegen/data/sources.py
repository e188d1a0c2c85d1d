"""Where photos come from: a folder (recursive), a .zip / .tar(.gz) archive, the official
CelebA layout inside either, or a Hugging Face dataset `hf:NAME[:SPLIT]`.

A source lists its files by name (sorted, so `--limit N` means the same N files everywhere)
and reads their raw bytes; decoding happens later in worker processes. A file that cannot
even be read yields a Skip instead of bytes, so one bad file never stops the others.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

from facegen.data.transforms import Skip
from facegen.utils import FacegenError

Payload = bytes | Skip  # raw file bytes, or why they could not be read

# CelebA's list_eval_partition: 0 train, 1 val, 2 test (Liu et al., ICCV 2015).
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}
CELEBA_IMAGES = "img_align_celeba/"


class Source:
    """A set of named files. Subclasses set `kind`, `location`, `names` and implement read()."""

    kind: str
    location: str
    names: list[str]  # every candidate file, sorted
    split_of: dict[str, str] | None = None  # file name -> store split (CelebA layout only)

    def read(self, names: list[str]) -> Iterator[tuple[str, Payload]]:
        """(name, bytes) for each of `names`, in whatever order is cheapest for the source."""
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


class FolderSource(Source):
    kind = "folder"

    def __init__(self, root: Path):
        self.root, self.location = root, str(root.resolve())
        names = []
        for folder, dirs, files in os.walk(root):
            rel = Path(folder).relative_to(root)
            names += [(rel / f).as_posix() for f in files]
        self.names = sorted(n for n in names if _visible(n))

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
        self.names = sorted(i.filename for i in self.zip.infolist() if not i.is_dir() and _visible(i.filename))

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
        self.names = sorted(self.members)

    def read(self, names):
        # Archive order, not name order: a .tar.gz can only be read forwards cheaply.
        wanted = set(names)
        for member in self.members.values():
            if member.name in wanted:
                try:
                    yield member.name, self.tar.extractfile(member).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    yield member.name, Skip(f"damaged archive member ({e})")


def apply_celeba_layout(source: Source) -> None:
    """img_align_celeba/ + list_eval_partition.txt (or .csv): keep its train/val/test split.

    Only the images under img_align_celeba/ are candidates then (not the attribute files).
    Images missing from the partition list are kept out of the split map; prepare skips
    them with a reason.
    """
    lists = [n for n in source.names if Path(n).name in ("list_eval_partition.txt", "list_eval_partition.csv")]
    images = [n for n in source.names if f"/{CELEBA_IMAGES}" in f"/{n}"]
    if not lists or not images:
        return
    (_, payload), = source.read(lists[:1])
    if isinstance(payload, Skip):
        raise FacegenError(f"{source.location}: cannot read {lists[0]} ({payload.reason})")
    split_by_file = {}
    for line in payload.decode("utf-8", "replace").splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) == 2 and parts[1] in CELEBA_SPLITS:  # also skips the csv header
            split_by_file[parts[0]] = CELEBA_SPLITS[parts[1]]
    source.kind = f"celeba-{source.kind}"
    source.names = images
    source.split_of = {n: split_by_file[Path(n).name] for n in images if Path(n).name in split_by_file}


class MultiSource(Source):
    """Several sources as one: each file is named "<label>/<name>", the label being the source's
    folder or archive name (made unique with its position when two share a name), so names stay
    distinct, sorted and stable whatever order the sources are given in."""

    kind = "multi"

    def __init__(self, sources: list[Source]):
        if any(s.split_of is not None for s in sources):
            raise FacegenError("a CelebA layout (img_align_celeba + list_eval_partition) cannot be merged with other sources; "
                               "prepare it alone")
        labels = [Path(s.location).name or s.kind for s in sources]
        labels = [f"{i}-{label}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
        self.parts = dict(zip(labels, sources))
        self.location = " + ".join(s.location for s in sources)
        self.names = sorted(f"{label}/{n}" for label, s in self.parts.items() for n in s.names)

    def read(self, names):
        wanted: dict[str, list[str]] = {}
        for name in names:
            label, _, inner = name.partition("/")
            wanted.setdefault(label, []).append(inner)
        for label, inner_names in wanted.items():
            for inner, payload in self.parts[label].read(inner_names):
                yield f"{label}/{inner}", payload

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
