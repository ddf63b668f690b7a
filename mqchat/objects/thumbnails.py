"""Image thumbnails with Pillow (pure: bytes in, bytes out; run it in a thread).

Decompression bombs: the pixel count is read from the header and checked against a limit before
any pixel is decoded; Pillow's own guard (``DecompressionBombError``) stays on behind it. A file
Pillow cannot read, or that is truncated, is a :class:`BadImage`, never a crash of the worker.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from mqchat.objects.sniff import IMAGE_TYPES


class BadImage(Exception):
    """No thumbnail can be made from these bytes; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int
    """Of the thumbnail."""
    source_width: int
    source_height: int
    """Of the original image."""


def is_image(content_type: str) -> bool:
    return content_type in IMAGE_TYPES


def make_thumbnail(data: bytes, *, max_px: int, max_pixels: int) -> Thumbnail:
    """A thumbnail whose longest side is at most ``max_px``: JPEG, or PNG when the image has transparency.

    Raises:
        BadImage: not an image Pillow reads, more than ``max_pixels`` pixels, or broken data.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns (and, above twice its limit, raises) on huge images; our own limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise BadImage("the image has no pixels")
                if width * height > max_pixels:
                    raise BadImage(f"{width}x{height} is more than {max_pixels} pixels")
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: turned a quarter
                    width, height = height, width
                img.draft("RGB", (max_px, max_px))  # JPEG: decode at a reduced scale, much cheaper
                img.load()
                oriented = ImageOps.exif_transpose(img)
                alpha = oriented.mode in ("RGBA", "LA", "PA") or (oriented.mode == "P" and
                                                                  "transparency" in oriented.info)
                small = oriented.convert("RGBA" if alpha else "RGB")
                small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                if alpha:
                    small.save(out, "PNG", optimize=True)
                    ctype = "image/png"
                else:
                    small.save(out, "JPEG", quality=80, optimize=True)
                    ctype = "image/jpeg"
                return Thumbnail(out.getvalue(), ctype, small.width, small.height, width, height)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"unreadable image: {exc}") from None
