"""The work folder of an unfinished `facegen data prepare`: what lets a killed run continue.

    .NAME.partial/          beside the store NAME, which appears only when complete
        lock                held while a prepare works here: a second one is refused
        job.json            the decoding arguments and a digest of the file list
        faces.u8            every decoded face, raw uint8 (size, size, 3), in decoding order
        files.jsonl         one line per decoded file: {"file", "faces", "hash"} or {"file", "reason"}
        store/              the store being written, renamed to NAME when complete

At each checkpoint the faces are flushed and fsynced first, then the journal lines of their
files are appended and fsynced: a journal line is never on disk before its faces. After a
kill (SIGKILL, power loss) the journal's whole lines say which files are done; faces past
them are cut off and those files are decoded again. Holdout and seed are not part of the job:
they only choose rows when the store is written, so changing them reuses the decoded faces.

Memory: the names stay on disk (data/names.py); per file this holds its face count, first row
and pixel hash (32 bytes), and the journal is read back a line at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from facegen.data.names import Names
from facegen.data.store import partial_dir
from facegen.utils import FacegenError, atomic_write_json, trim_heap

CHECKPOINT_S = 2.0  # journal written (and fsynced) at most this often: a kill loses seconds of work


class Partial:
    """Decoded files of one prepare, by rank in the sorted list `names`."""

    def __init__(self, out: Path, job: dict, names: Names, face_shape: tuple[int, ...]):
        self.out, self.dir, self.names, self.face_shape = out, partial_dir(out), names, face_shape
        self.face_bytes = int(np.prod(face_shape))
        self.job = {**job, "files": len(names), "names_sha256": names.sha256()}  # sha256 of the names joined by newlines
        self.faces_file, self.journal_file = self.dir / "faces.u8", self.dir / "files.jsonl"
        self.store_dir = self.dir / "store"
        n = len(names)
        self.count = np.full(n, -1, np.int32)  # faces of each file; -1: not decoded yet
        self.first = np.zeros(n, np.int64)  # row of its first face in faces.u8
        self.digest = np.zeros(n, "S20")  # sha1 of its decoded pixels: equal digests are exact duplicates
        self.reasons: dict[int, str] = {}  # rank -> why the file gives no face
        self.rows = 0  # faces in faces.u8
        self.resumed = 0  # files found done when opened
        self.restarted = False  # work of a prepare with other arguments was found and dropped
        self._pending: list[str] = []
        self._last_checkpoint = time.monotonic()

    # ---- opening: lock, same job?, recover -------------------------------------------------

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.dir / "lock")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise FacegenError(f"another `facegen data prepare` is writing {self.out} "
                               f"(it holds {self.dir / 'lock'}); wait for it to finish or choose another --out") from None
        job_file = self.dir / "job.json"
        try:
            same = json.loads(job_file.read_text()) == self.job
        except (OSError, ValueError):
            same = False
        for spilled in self.dir.glob("chunk-*.u8"):  # a killed run's chunks that never reached faces.u8
            spilled.unlink()
        if not (same and self._recover()):
            self.restarted = job_file.exists()
            self._start_clean()
        self.resumed = int((self.count >= 0).sum())
        self.faces = open(self.faces_file, "ab")
        self.journal = open(self.journal_file, "ab")

    def _start_clean(self) -> None:
        for path in (self.faces_file, self.journal_file, self.dir / "job.json", self.dir / "installing"):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.store_dir, ignore_errors=True)
        self.count[:], self.rows, self.reasons = -1, 0, {}
        atomic_write_json(self.dir / "job.json", self.job)

    def _recover(self) -> bool:
        """Read the journal's whole lines (one at a time); cut faces.u8 and the journal to them. False: unusable."""
        whole = 0  # bytes of whole lines
        try:
            if self.journal_file.exists():
                with open(self.journal_file, "rb") as journal:
                    for line in journal:
                        if not line.endswith(b"\n"):  # a line torn by a kill is dropped
                            break
                        self._record(**json.loads(line))
                        whole += len(line)
        except (ValueError, TypeError, KeyError):
            return False
        size = self.faces_file.stat().st_size if self.faces_file.exists() else 0
        if size < self.rows * self.face_bytes:  # the journal claims faces that never reached the disk
            return False
        for file, length in ((self.journal_file, whole), (self.faces_file, self.rows * self.face_bytes)):
            if file.exists():
                os.truncate(file, length)
        return True

    def _record(self, file: str, faces: int = 0, hash: str | None = None, reason: str | None = None) -> None:
        try:
            rank = self.names.index(file)
        except ValueError:
            raise KeyError(file) from None
        if self.count[rank] >= 0:
            raise KeyError(file)
        self.count[rank], self.first[rank] = faces, self.rows
        if reason is None:
            self.digest[rank] = bytes.fromhex(hash)
        else:
            self.reasons[rank] = reason
        self.rows += faces

    # ---- adding decoded files ----------------------------------------------------------------

    def todo(self) -> Names:
        """The names not decoded yet (all of them when nothing was)."""
        left = self.count < 0
        return self.names if left.all() else self.names.subset(left)

    def take_faces(self, spilled: Path) -> None:
        """Append the faces a decoding worker wrote to `spilled` (then add() each of its files)."""
        with open(spilled, "rb") as f:
            shutil.copyfileobj(f, self.faces)
        spilled.unlink()

    def add(self, name: str, faces: list[np.ndarray] | int, reason: str | None, pixel_hash: str | None) -> None:
        """One decoded file: its faces (or their count, when take_faces wrote them) and hash, or why it gives none."""
        if not isinstance(faces, int):
            for face in faces:
                if face.shape != self.face_shape:
                    raise ValueError(f"{name}: face of shape {face.shape}, expected {self.face_shape}")
                self.faces.write(np.ascontiguousarray(face, np.uint8).data)
            faces = len(faces)
        entry = {"file": name, "reason": reason} if reason is not None else {"file": name, "faces": faces, "hash": pixel_hash}
        self._record(**entry)
        self._pending.append(json.dumps(entry) + "\n")
        if time.monotonic() - self._last_checkpoint >= CHECKPOINT_S:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Faces on disk first, then the journal lines that claim them."""
        self.faces.flush()
        os.fsync(self.faces.fileno())
        self.journal.write("".join(self._pending).encode())
        self.journal.flush()
        os.fsync(self.journal.fileno())
        self._pending.clear()
        trim_heap()  # freed photo bytes and chunks would otherwise keep the memory growing with the files
        self._last_checkpoint = time.monotonic()

    def stop_decoding(self) -> None:
        """Checkpoint what was decoded (also on Ctrl-C: the next run continues from here)."""
        if not self.faces.closed:
            self.checkpoint()
            self.faces.close()
            self.journal.close()

    def release(self) -> None:
        """Let another prepare work here (also when this one failed or was interrupted)."""
        if self.lock.is_locked:
            self.lock.release()

    def remove(self) -> None:
        """The store is in place: the work folder has served."""
        self.release()
        shutil.rmtree(self.dir)
