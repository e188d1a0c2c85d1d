"""A Hugging Face dataset as a photo source: `hf:NAME[:SPLIT]`.

NAME is a Hub id (downloaded by `datasets` into its cache), a folder written by
`Dataset.save_to_disk`, or a local folder of images (read as an `imagefolder`). Images
are read as their stored file bytes (decode=False) so decoding follows the same path,
with the same checks, as every other source.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from facegen.data.names import Names
from facegen.data.sources import Source
from facegen.data.transforms import Skip
from facegen.utils import FacegenError

BATCH_ROWS = 256  # rows fetched from Arrow per read: fewer, larger reads


class HFSource(Source):
    kind = "hf"

    def __init__(self, spec: str):
        name, sep, split = spec.rpartition(":")
        if not sep or "/" in split or not name:  # no split given (or the ':' was part of a path)
            name, split = spec, ""
        self.location = f"hf:{spec}"
        dataset = _load(name, split)
        self.column = _image_column(dataset, self.location)
        import datasets

        self.dataset = dataset.cast_column(self.column, datasets.Image(decode=False))
        self.split = dataset.split or split or "train"
        self.names = Names.of_sorted(f"{i:09d}" for i in range(len(dataset)))  # row numbers, sortable
        if not self.names:
            raise FacegenError(f"{self.location} has no rows; pick a split that holds images")

    def describe(self) -> dict:
        return {**super().describe(), "split": str(self.split)}

    def read(self, names):
        names = iter(names)
        while chunk := [int(n) for n in islice(names, BATCH_ROWS)]:
            for row, image in zip(chunk, self.dataset.select(chunk)[self.column]):
                yield f"{row:09d}", _image_bytes(image)


def _load(name: str, split: str):
    """A `datasets.Dataset` for one split of NAME (raises FacegenError on failure)."""
    import datasets

    path = Path(name)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))  # a save_to_disk folder
        else:
            loaded = datasets.load_dataset(name, split=split or None)  # Hub id or local imagefolder
    except Exception as e:  # datasets raises many kinds; all mean "cannot load this"
        raise FacegenError(f"hf:{name}: cannot load the dataset ({type(e).__name__}: {e}); check the name or path") from None
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if not split:
        split = "train" if "train" in loaded else (next(iter(loaded)) if len(loaded) == 1 else "")
    if split not in loaded:
        raise FacegenError(f"hf:{name} has splits {', '.join(loaded)}; pick one with hf:{name}:SPLIT")
    return loaded[split]


def _image_column(dataset, location: str) -> str:
    import datasets

    for column, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise FacegenError(f"{location}: no image column (columns: {', '.join(dataset.features)}); use a dataset of images")


def _image_bytes(image: dict | None):
    """An undecoded Image cell -> file bytes (from the Arrow table or from its path)."""
    if not image:
        return Skip("empty image cell")
    if image.get("bytes"):
        return image["bytes"]
    try:
        return Path(image["path"]).read_bytes()
    except (OSError, TypeError) as e:
        return Skip(f"image file unreadable ({e})")
