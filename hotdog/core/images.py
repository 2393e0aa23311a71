"""Turn any image a user may hand us into an upright RGB picture, or say why it cannot be used.

The training data, ``hotdog.predict`` and the service all decode through here, so all three see
the same pixels for the same file.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hotdog.core.errors import HotdogError

# Larger images are refused before decoding: a few kB of compressed data can claim billions of
# pixels (a decompression bomb). 50 Mpx is well above any phone photo.
DEFAULT_MAX_PIXELS = 50_000_000
# Resizing the short side to a model's size would blow a 5000 x 2 strip up to ~1 GB.
MAX_ASPECT_RATIO = 20


class UnreadableImageError(HotdogError, ValueError):
    """A file or upload is not an image this project can use; ``reason`` says why.

    ``kind`` sorts the reasons for callers that answer differently (the service's status codes):
    ``empty``, ``unsupported`` (not an image, or a format not allowed), ``too_large`` (too many
    pixels or too elongated) or ``corrupt`` (truncated or damaged data).
    """

    def __init__(self, source: str, reason: str, kind: str = "corrupt") -> None:
        super().__init__(f"{source} {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale images, scaled to 8 bits (``convert`` would clip them)."""
    if image.mode not in {"I", "I;16", "I;16B", "I;16L", "F"}:
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white, as a viewer would show them."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and what was sent: the file format and the size stored in the file."""

    image: Image.Image
    format: str
    width: int
    height: int


def decode_image(
    data: bytes,
    *,
    source: str = "upload",
    min_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Collection[str] | None = None,
) -> Image.Image:
    """Decode the bytes of an image file into an upright RGB image.

    ``min_short_side`` lets JPEG decoding skip detail that a later resize would throw away
    (Pillow's draft mode); the short side of the result stays at least that long.
    ``formats`` (Pillow's names, e.g. ``{"JPEG", "PNG"}``) restricts the accepted file formats.
    Raises :class:`UnreadableImageError` for anything that is not a complete, sane image.
    """
    return decode_upload(
        data, source=source, min_short_side=min_short_side, max_pixels=max_pixels, formats=formats
    ).image


def decode_upload(
    data: bytes,
    *,
    source: str = "upload",
    min_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Collection[str] | None = None,
) -> DecodedImage:
    """:func:`decode_image`, also saying what was sent (Pillow drops the format on conversion
    and draft mode shrinks the size)."""
    if not data:
        raise UnreadableImageError(source, "is empty", "empty")
    image: Image.Image
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own pixel limit; ours is applied right after opening.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(
            source,
            f"has too many pixels to be decoded safely (more than {max_pixels:,}); "
            "downscale it first",
            "too_large",
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(
            source, "is not an image in a supported format", "unsupported"
        ) from error
    if formats is not None and image.format not in formats:
        raise UnreadableImageError(
            source,
            f"is a {image.format} image, which is not accepted; send {', '.join(sorted(formats))}",
            "unsupported",
        )

    file_format, (width, height) = str(image.format), image.size
    if width < 1 or height < 1:
        raise UnreadableImageError(source, "has no pixels", "corrupt")
    if width * height > max_pixels:
        raise UnreadableImageError(
            source,
            f"is {width}x{height} pixels, more than the limit of {max_pixels:,}; "
            "downscale it first",
            "too_large",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UnreadableImageError(
            source,
            f"is {width}x{height} pixels, longer than {MAX_ASPECT_RATIO}:1; crop it first",
            "too_large",
        )
    if min_short_side and image.format == "JPEG":
        scale = min_short_side / min(width, height)
        if scale < 1:
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(source, f"is corrupt or truncated ({error})") from error
    # A broken orientation tag leaves the pixels as stored.
    with contextlib.suppress(OSError, SyntaxError, ValueError, TypeError):
        image = ImageOps.exif_transpose(image) or image
    return DecodedImage(_flatten_alpha(_to_8_bit(image)), file_format, width, height)


def read_image(path: Path, **kwargs: object) -> Image.Image:
    """Read and decode the image file at ``path`` (see :func:`decode_image`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(str(path), f"cannot be read ({error.strerror})") from error
    return decode_image(data, source=str(path), **kwargs)  # type: ignore[arg-type]
