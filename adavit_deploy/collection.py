"""Image collections: what ``evaluate``, ``infer``, calibration, ``bench`` and ``tune`` read images from.

One reader for every command, so a folder means the same thing everywhere:

- an **ImageFolder** tree (class subfolders; torchvision's and timm's layout):
  the subfolder names sorted give the labels ``0..K-1`` (torchvision's rule, so
  ImageNet's synset folders give the standard class indices), images are found
  recursively under each; a class folder with no images keeps its index and
  is a warning;
- a **flat folder** of images: no labels, or labels from ``--labels FILE``, a
  CSV of ``file,label`` rows (a header row is allowed), file names relative to
  the folder; the CSV then lists the collection;
- an ``.npy``/``.npz`` of normalised NCHW floats (an ``.npz`` may hold
  ``labels``), single image files, and ``demo`` (the demo's held-out digits).

Nothing is decoded when a collection is opened: ``batches`` decodes on a
small pool of threads (Pillow releases the GIL while it decodes and resizes),
a fixed number of batches ahead of the one being run, so memory is bounded by
the batch size and not by the collection, and decoding overlaps inference.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import deque
from contextlib import closing
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .config import AdaViTConfig
from .errors import InputError, ParamWarning, param
from .inputs import (
    ARRAY_SUFFIXES,
    IMAGE_EXTENSIONS,
    eval_transform,
    is_image_file,
    read_array,
    read_image,
    read_images,
    sample_labels,
)

if TYPE_CHECKING:
    from .runtime import AdaptiveRuntime, InferResult

DEMO = "demo"
#: Batches decoded ahead of the one being run: enough to hide a slow file, few enough to bound memory.
AHEAD = 2


def default_workers() -> int:
    """Decode threads when none are asked for: half the cores (at least one, at most 8); the rest run the model."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class Collection:
    """The samples of a source, in order: each an image file (``Path``) or a row of ``array`` (``int``)."""

    source: str  # the path as given, or what the source is
    kind: str  # "imagefolder", "folder", "labels-file", "array", "files", "demo"
    items: tuple[Path | int, ...]
    names: tuple[str, ...]  # one per item: the path relative to the folder, or file[i]
    labels: np.ndarray | None = None  # int64 class index per item
    classes: tuple[str, ...] | None = None  # ImageFolder: the class folder names, index order
    array: np.ndarray | None = None  # the normalised rows that ``int`` items index

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int | None:
        """Classes the source declares (ImageFolder folders), else the distinct labels it holds."""
        if self.classes is not None:
            return len(self.classes)
        return len(np.unique(self.labels)) if self.labels is not None and len(self.labels) else None

    def describe(self) -> dict:
        """What was read, for a report: the path, how many images and classes."""
        return {"path": self.source, "kind": self.kind, "images": len(self), "classes": self.num_classes}

    def subset(self, limit: int | None, seed: int = 0, what: str | None = "limit") -> "Collection":
        """At most ``limit`` items, seeded; class-balanced where there are labels (round-robin over classes
        in a seeded order within each), in collection order. ``None`` or ``limit >= len``: all of them (a
        warning when more were asked for); ``what``: the parameter's name, for messages (``None``: a cap
        of the caller's own, no warning)."""
        if limit is not None and limit < 1:
            raise InputError(f"{param(what or 'limit')} must be >= 1, got {limit}")
        if limit is None or limit >= len(self):
            if what is not None and limit is not None and limit > len(self):
                message = f"{param(what)} {limit}, but {self.source} holds {len(self)} images: all of them are used"
                warnings.warn(ParamWarning(message), stacklevel=2)
            return self
        rng = np.random.default_rng(seed)
        if self.labels is None:
            keep = rng.choice(len(self), limit, replace=False)
        else:
            groups = [rng.permutation(np.flatnonzero(self.labels == c)) for c in rng.permutation(np.unique(self.labels))]
            depth = max(len(g) for g in groups)
            # rank by rank across classes, in a seeded class order: a limit below the class count takes
            # seeded classes, not the first ones
            order = [g[i] for i in range(depth) for g in groups if i < len(g)]
            keep = np.asarray(order[:limit])
        keep = np.sort(keep)
        return replace(
            self,
            items=tuple(self.items[i] for i in keep),
            names=tuple(self.names[i] for i in keep),
            labels=None if self.labels is None else self.labels[keep],
        )

    def for_model(self, num_classes: int) -> "Collection":
        """The collection with labels that mean the model's classes, checked (``check_classes``).

        An ImageFolder tree with fewer class folders than the model has classes is a
        subset of them, and sorted positions would mislabel it: where the model has
        ImageNet-1k's 1000 classes and every folder is an ImageNet synset, each folder
        gets its synset's index (the same as sorted positions for the full 1000);
        otherwise a warning says how the labels were given and how to give others.
        """
        if self.kind != "imagefolder" or len(self.classes) >= num_classes:
            self.check_classes(num_classes)
            return self
        from .classes import imagenet_synsets

        synsets = imagenet_synsets() if num_classes == 1000 else None
        if synsets is not None and set(self.classes) <= set(synsets):
            index = np.asarray([synsets.index(c) for c in self.classes], np.int64)
            return replace(self, labels=index[self.labels])  # classes: the folders, still (their count is reported)
        warnings.warn(
            f"{self.source}: {len(self.classes)} class folders for a model of {num_classes} classes: the sorted "
            f"folders are labelled 0..{len(self.classes) - 1} (torchvision's rule); if they are other classes "
            f"of the model, give {param('labels')} FILE (CSV file,label)",
            ParamWarning,
            stacklevel=2,
        )
        return self

    def check_classes(self, num_classes: int) -> None:
        """Refuse a source with more classes than the model, or a label outside ``[0, num_classes)``."""
        if self.classes is not None and len(self.classes) > num_classes:
            raise InputError(f"{self.source}: {len(self.classes)} class folders but the model has {num_classes} classes")
        if self.labels is not None and len(self.labels):
            bad = np.flatnonzero((self.labels < 0) | (self.labels >= num_classes))
            if len(bad):
                raise InputError(
                    f"{self.source}: label {self.labels[bad[0]]} of {self.names[bad[0]]} is outside the model's "
                    f"{num_classes} classes [0, {num_classes}) ({len(bad)} such labels)"
                )

    def require_labels(self, num_classes: int, what: str = "evaluate") -> "Collection":
        """The collection labelled for the model (``for_model``), or one line saying how to give labels."""
        if self.labels is None:
            raise InputError(
                f"{self.source}: {what} needs labels: give an ImageFolder tree (one subfolder per class), "
                f"a folder with {param('labels')} FILE (CSV file,label), or an .npz with 'labels'"
            )
        return self.for_model(num_classes)

    def batches(
        self,
        cfg: AdaViTConfig,
        batch_size: int,
        workers: int | None = None,
        skip_bad: bool | None = False,
    ) -> Iterator["Batch"]:
        """Decoded batches of at most ``batch_size``, in order, ``AHEAD`` decoded ahead on ``workers`` threads.

        A file that cannot be read stops the run with its path (an ``InputError``;
        ``skip_bad=None``: a caller that offers no ``skip_bad``, so the message does
        not suggest it), or, with ``skip_bad``, is left out of its batch with a
        warning naming it (``Batch.skipped``). Closing the iterator early (an error, Ctrl-C) cancels
        what is queued and waits for the threads: nothing is left running.
        """
        if batch_size < 1:
            raise InputError(f"{param('batch_size')} must be >= 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise InputError(f"{param('workers')} must be >= 1, got {workers}")
        files = any(isinstance(i, Path) for i in self.items)
        if files and cfg.in_chans != 3:
            raise InputError(f"{self.source}: image files need a 3-channel model; pass a .npy/.npz array")
        want = (cfg.in_chans, cfg.img_size, cfg.img_size)
        if self.array is not None and self.array.shape[1:] != want:
            raise InputError(f"{self.source}: images must be of shape (B, {', '.join(map(str, want))}) for this model; "
                             f"got {self.array.shape}")  # fmt: skip
        decode = _decoder(cfg, self.array)
        spans = [range(i, min(i + batch_size, len(self))) for i in range(0, len(self), batch_size)]
        pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="adavit-decode")
        queued: deque[tuple[range, list[Future]]] = deque()
        try:
            for span in spans:
                queued.append((span, [pool.submit(decode, self.items[i]) for i in span]))
                if len(queued) > AHEAD:
                    yield self._gather(*queued.popleft(), skip_bad)
            while queued:
                yield self._gather(*queued.popleft(), skip_bad)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _gather(self, span: range, futures: list[Future], skip_bad: bool | None) -> "Batch":
        images, kept, skipped = [], [], []
        for i, future in zip(span, futures):
            try:
                images.append(future.result())
                kept.append(i)
            except InputError as e:
                if skip_bad is None:
                    raise
                if not skip_bad:
                    raise InputError(f"{e} ({param('skip_bad')} leaves such files out)") from None
                warnings.warn(f"skipped: {e}", stacklevel=2)
                skipped.append(self.names[i])
        labels = None if self.labels is None else self.labels[kept]
        stacked = np.stack(images) if images else np.empty((0,), np.float32)
        return Batch(stacked, [self.names[i] for i in kept], labels, skipped)

    def read_all(self, cfg: AdaViTConfig, workers: int | None = None) -> np.ndarray:
        """Every image decoded into one array: for the small sets held in memory (calibration, bench)."""
        return np.concatenate([b.images for b in self.batches(cfg, 64, workers, skip_bad=None)])


@dataclass
class Batch:
    images: np.ndarray  # (n, C, H, W) float32, normalised
    names: list[str]
    labels: np.ndarray | None
    skipped: list[str]  # names of files left out (--skip-bad)


def _decoder(cfg: AdaViTConfig, array: np.ndarray | None) -> Callable[[Path | int], np.ndarray]:
    transform = eval_transform(cfg) if cfg.in_chans == 3 else None

    def decode(item: Path | int) -> np.ndarray:
        if isinstance(item, Path):
            return transform(read_image(item))
        return array[item]

    return decode


# -- opening a source -----------------------------------------------------------------------------


def open_collection(source: str | Path, labels: str | Path | None = None, want: tuple[int, int, int] | None = None) -> Collection:
    """The collection at ``source`` (see the module docstring); ``labels``: a CSV for a flat folder;
    ``want``: the (C, H, W) an array file must hold."""
    if str(source) == DEMO:
        if labels is not None:
            raise InputError(f"{param('labels')} is for a folder of images; 'demo' has its own labels")
        from .demo import load_digits_split

        split = load_digits_split()
        return from_array(split.test_images, "demo digits, held-out split (360 images)", split.test_labels, kind=DEMO)
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if labels is not None and not path.is_dir():
        raise InputError(f"{param('labels')} goes with a folder of images; {path} is a file")
    if path.is_dir():
        return _labelled_folder(path, Path(labels)) if labels is not None else _folder(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes)")
    if path.suffix in ARRAY_SUFFIXES:
        return _array_file(path, want)
    return open_files([path])


def open_files(paths: Sequence[str | Path], want: tuple[int, int, int] | None = None) -> Collection:
    """Several inputs as one collection (``infer a.png b.jpg dir/ x.npz``): folders (every image under
    them, class folders or not: no labels are read) and arrays expanded; each named by its path as given
    (``dir/cat/1.jpg``, ``x.npz[3]``), so names from different inputs stay apart."""
    if not paths:
        raise InputError("no inputs given")
    parts = []
    for p in map(Path, paths):
        if p.is_dir():
            images = _walk_images(p)  # no labels wanted: every image under it, class folders or not
            if not images:
                raise _no_images(p)
            parts.append(Collection(str(p), "files", tuple(images), tuple(f.as_posix() for f in images)))
        elif p.suffix in ARRAY_SUFFIXES:
            part = open_collection(p, want=want)
            parts.append(replace(part, names=tuple(f"{p.as_posix()}[{i}]" for i in range(len(part)))))
        elif not p.is_file():
            raise InputError(f"{p}: no such file")
        elif p.stat().st_size == 0:
            raise InputError(f"{p}: is empty (0 bytes)")
        else:
            parts.append(Collection(str(p), "files", (p,), (p.as_posix(),)))
    if len(parts) == 1:
        return parts[0]
    return _concat(parts, ", ".join(map(str, paths)))


def from_array(images: np.ndarray, source: str, labels: np.ndarray | None = None, kind: str = "array",
               names: Sequence[str] | None = None) -> Collection:  # fmt: skip
    """A collection over normalised NCHW rows already in memory."""
    names = tuple(names) if names is not None else tuple(sample_labels(Path(source), len(images)))
    labels = None if labels is None else _int_labels(labels, len(images), source)
    return Collection(source, kind, tuple(range(len(images))), names, labels, array=images)


def _int_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"{source}: labels must be one class index per image (1-D); got shape {labels.shape}")
    if len(labels) != count:
        raise InputError(f"{source}: {count} images but {len(labels)} labels: give one label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{source}: labels must be integer class indices; got {labels.dtype}")
    return labels.astype(np.int64)


def _array_file(path: Path, want: tuple[int, int, int] | None) -> Collection:
    images = read_images(path, want)
    labels = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            has_labels = "labels" in data.files
        labels = read_array(path, "labels") if has_labels else None
    return from_array(images, str(path), labels)


def _concat(parts: list[Collection], source: str) -> Collection:
    rows = [p.array for p in parts if p.array is not None]
    offsets, items, start = [], [], 0
    for p in parts:
        offsets.append(start)
        start += 0 if p.array is None else len(p.array)
    for p, off in zip(parts, offsets):
        items += [i if isinstance(i, Path) else i + off for i in p.items]
    names = tuple(n for p in parts for n in p.names)
    array = np.concatenate(rows) if rows else None
    return Collection(source, "files", tuple(items), names, array=array)


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in torchvision's order (sorted walk, links followed, each
    folder once); hidden files and folders (``.ipynb_checkpoints``) left out."""
    walked, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back to a folder already walked (a cycle, or two links to one folder)
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        walked.append((root, files))
    return [Path(root) / f for root, files in sorted(walked) for f in sorted(files) if is_image_file(Path(root) / f)]


def _no_images(path: Path) -> InputError:
    return InputError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder or its subfolders")


def _folder(path: Path) -> Collection:
    """An ImageFolder tree when it has class subfolders with images, else a flat folder."""
    flat = sorted(p for p in path.iterdir() if is_image_file(p))
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = {c: _walk_images(path / c) for c in classes}
    if not any(per_class.values()):
        if not flat:
            raise _no_images(path)
        return Collection(str(path), "folder", tuple(flat), tuple(p.name for p in flat))
    if flat:
        raise InputError(
            f"{path}: holds both image files ({flat[0].name}, ...) and class folders: put every image in its "
            "class folder (ImageFolder), or pass a folder of images alone"
        )
    empty = [c for c in classes if not per_class[c]]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        warnings.warn(f"{path}: {len(empty)} class folder(s) hold no images ({shown}); their class indices are kept", stacklevel=3)
    items = [f for c in classes for f in per_class[c]]
    labels = np.asarray([k for k, c in enumerate(classes) for _ in per_class[c]], np.int64)
    names = tuple(f.relative_to(path).as_posix() for f in items)
    return Collection(str(path), "imagefolder", tuple(items), names, labels, tuple(classes))


def _is_int(cell: str) -> bool:
    """An integer class index as a CSV cell holds it (ASCII digits: ``int`` refuses ``²``)."""
    digits = cell.strip().removeprefix("-")
    return digits.isascii() and digits.isdecimal()


def _labelled_folder(path: Path, labels_file: Path) -> Collection:
    """A folder and a CSV of ``file,label`` rows: the CSV lists the collection, in its order."""
    if not labels_file.is_file():
        raise InputError(f"{labels_file}: no such labels file")
    try:
        with labels_file.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{labels_file}: not a readable CSV ({type(e).__name__}: {e})") from None
    first = 1
    if rows and not _is_int(rows[0][-1]) and not (path / rows[0][0].strip()).is_file():
        rows, first = rows[1:], 2  # a header (a first row naming a file is data, checked below)
    if not rows:
        raise InputError(f"{labels_file}: no file,label rows")
    items, labels, rows_of = [], [], {}
    for line, row in enumerate(rows, first):
        if len(row) != 2 or not _is_int(row[1]):
            raise InputError(f"{labels_file}: row {line} {','.join(row)!r} is not file,label (an integer class index)")
        file = path / row[0].strip()
        if Path(row[0].strip()).is_absolute() or ".." in Path(row[0].strip()).parts:
            raise InputError(f"{labels_file}: row {line}: {row[0].strip()}: give a path relative to {path}")
        if not file.exists():
            raise InputError(f"{labels_file}: row {line}: {file}: no such file")
        if not is_image_file(file):
            raise InputError(f"{labels_file}: row {line}: {file} is not an image file")
        if file in rows_of:
            raise InputError(f"{labels_file}: row {line}: {row[0].strip()} is already listed at row {rows_of[file]}")
        rows_of[file] = line
        items.append(file)
        labels.append(int(row[1]))
    unlisted = [p.relative_to(path).as_posix() for p in _walk_images(path) if p not in rows_of]
    if unlisted:
        warnings.warn(f"{path}: {len(unlisted)} image(s) not in {labels_file.name} left out ({unlisted[0]}, ...)", stacklevel=3)
    names = tuple(f.relative_to(path).as_posix() for f in items)
    return Collection(str(path), "labels-file", tuple(items), names, np.asarray(labels, np.int64))


def infer_collection(
    runtime: "AdaptiveRuntime",
    collection: Collection,
    batch_size: int = 16,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple["InferResult", list[str]]:
    """Every image of ``collection`` through ``runtime``, streamed; the results and the names of the inputs read
    (those ``skip_bad`` left out are missing from both). Memory: a few decoded batches and the outputs."""
    from .runtime import InferResult

    step = progress or (lambda *_: None)
    parts, names, done = [], [], 0
    step("decoding the first batch", 0, len(collection))
    with closing(collection.batches(runtime.cfg, batch_size, workers, skip_bad)) as stream:  # threads joined on any exit
        for batch in stream:
            if len(batch.names):
                parts.append(runtime.infer(batch.images))
                names += batch.names
            done += len(batch.names) + len(batch.skipped)
            step("inferring", done, len(collection))
    if not parts:
        raise InputError(f"{collection.source}: every image was unreadable ({done} skipped)")
    return InferResult.concat(parts), names
