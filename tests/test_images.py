"""Decoding: every kind of odd but valid image works; every kind of bad input is refused clearly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from hotdog.core.images import UnreadableImageError, decode_image, read_image
from tests.conftest import SAMPLE

PHOTO = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))[0]


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_real_photo_decodes_to_rgb():
    image = read_image(PHOTO)
    assert image.mode == "RGB" and min(image.size) == 256


def test_grayscale_becomes_three_equal_channels():
    gray = Image.new("L", (40, 30), 77)
    image = decode_image(_encode(gray, "JPEG"))
    assert image.mode == "RGB"
    assert image.getpixel((20, 15))[0] == image.getpixel((20, 15))[2]


def test_transparent_png_is_flattened_onto_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    image = decode_image(_encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_palette_with_transparency_is_flattened():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] * 256)
    image = decode_image(_encode(palette, "PNG", transparency=0))
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    red, green, blue = decode_image(_encode(cmyk, "JPEG", quality=95)).getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (60, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = decode_image(_encode(wide, "JPEG", exif=exif))
    assert image.size == (20, 60)


def test_draft_mode_keeps_the_requested_short_side():
    image = read_image(PHOTO, min_short_side=100)
    assert min(image.size) >= 100
    assert min(image.size) < 256  # JPEG DCT scaling did skip detail


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "is empty"),
        (b"this is not an image at all", "not an image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
    ],
)
def test_non_images_are_refused(data, reason):
    with pytest.raises(UnreadableImageError, match=reason):
        decode_image(data, source="x.jpg")


def test_truncated_jpeg_is_refused():
    data = PHOTO.read_bytes()
    with pytest.raises(UnreadableImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], source="half.jpg")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_claiming(60_000, 60_000)
    assert len(bomb) < 100
    with pytest.raises(UnreadableImageError, match="pixels"):
        decode_image(bomb, source="bomb.png")


def test_pixel_limit_is_configurable():
    small = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(UnreadableImageError, match="more than the limit"):
        decode_image(small, max_pixels=5_000)


def test_unreadable_path_names_the_file(tmp_path: Path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(UnreadableImageError) as caught:
        read_image(missing)
    assert str(missing) in str(caught.value) and "cannot be read" in str(caught.value)


def test_16_bit_greyscale_is_scaled_not_clipped():
    import numpy as np

    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    image = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)[..., 0]
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255
    assert 100 < pixels[0, 32] < 155


def test_extremely_elongated_images_are_refused():
    strip = _encode(Image.new("RGB", (5000, 2)), "PNG")
    with pytest.raises(UnreadableImageError, match="longer than 20:1"):
        decode_image(strip)
