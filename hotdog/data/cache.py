"""Decode each image once: resized uint8 pictures stored on disk, keyed by content and size.

The key is the SHA-256 of the file's bytes plus the preprocessing parameters that shape the
picture, so a renamed file hits the cache, an edited file misses it, and models with another
input size or interpolation never share entries.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hotdog.core.images import UnreadableImageError, decode_image
from hotdog.data.transforms import DataConfig, resize_short_side

# Raise when decoding or resizing changes, so no stale picture is served from an old cache.
DECODER_VERSION = 1

log = logging.getLogger(__name__)

# np.load parses each header with ast.literal_eval, and CPython 3.11's AST construction is not
# safe from several threads at once: it fails now and then with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905). Reading a header is short; decoding, the
# slow part that the threads are for, stays parallel.
_HEADER_LOCK = threading.Lock()


@dataclass(frozen=True)
class DecodedImage:
    path: Path
    pixels: torch.Tensor | None  # uint8 CHW, short side = resize_size; None when unreadable
    error: str | None = None


class ImageCache:
    """Resized pictures on disk (``directory``) or only in memory (``directory=None``)."""

    def __init__(self, directory: str | Path | None, data_config: DataConfig) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.data_config = data_config
        self._variant = f"v{DECODER_VERSION}-{data_config.resize_size}-{data_config.interpolation}"
        self._store_failed = False

    def _entry(self, content: bytes) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(content).hexdigest()
        return self.directory / self._variant / digest[:2] / f"{digest}.npy"

    def load(self, path: Path) -> DecodedImage:
        """The resized picture of ``path``, decoded now or read back from the cache."""
        try:
            content = path.read_bytes()
        except OSError as error:
            return DecodedImage(path, None, f"cannot be read ({error.strerror})")
        entry = self._entry(content)
        if entry is not None and entry.is_file():
            try:
                with _HEADER_LOCK:
                    array = np.load(entry)
                return DecodedImage(path, torch.from_numpy(array))
            except (OSError, ValueError):
                pass  # a damaged entry is simply rebuilt
        try:
            image = decode_image(
                content, source=str(path), min_short_side=self.data_config.resize_size
            )
        except UnreadableImageError as error:
            return DecodedImage(path, None, error.reason)
        pixels = resize_short_side(image, self.data_config)
        if entry is not None:
            self._store(entry, pixels)
        return DecodedImage(path, pixels)

    def _store(self, entry: Path, pixels: torch.Tensor) -> None:
        if self._store_failed:
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a concurrent reader (another DDP rank) never sees half a file.
            with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as tmp:
                np.save(tmp, pixels.numpy())
            Path(tmp.name).replace(entry)
        except OSError as error:
            self._store_failed = True
            log.warning(
                "Cannot write the image cache in %s (%s); decoding in memory only. Set "
                "HOTDOG_CACHE_DIR or data.cache_dir to a writable folder to cache.",
                self.directory,
                error.strerror,
            )

    def load_many(self, paths: Sequence[Path], threads: int = 2) -> list[DecodedImage]:
        """Load ``paths`` in order; Pillow releases the GIL, so threads decode in parallel."""
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            return list(pool.map(self.load, paths))
