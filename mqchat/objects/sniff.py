"""What a file really is, from its first bytes (pure). The declared content type of an upload is
only believed when :func:`sniff` finds the same type in the stored bytes."""

from __future__ import annotations

import codecs
import io
import warnings

#: Bytes read from the start of an object to sniff it and read image dimensions from the header.
SNIFF_BYTES = 256 * 1024
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (4, b"ftyp", "video/mp4"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
)


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file show, or None when none is recognised.

    Args:
        head: the file's first bytes (:data:`SNIFF_BYTES` is plenty; the magic numbers need 12).
    """
    for offset, magic, ctype in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return ctype
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "audio/mpeg"  # an MPEG audio frame header (MP3 without an ID3 tag)
    if head and b"\x00" not in head:
        try:
            # final=False: the head may end inside a multi-byte character
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            return None
        return "text/plain"
    return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header, or None when the header does not say (yet).

    Only the header is parsed (no pixels are decoded), so a decompression bomb costs nothing here.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(head)) as img:
                width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return (width, height) if width > 0 and height > 0 else None
