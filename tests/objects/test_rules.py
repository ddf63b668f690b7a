"""The pure parts of attachments: URL signing, sniffing, the upload and send rules, thumbnails."""

from __future__ import annotations

import io
import urllib.parse

import pytest
from PIL import Image

from mqchat.config import ObjectsSettings
from mqchat.objects import policy
from mqchat.objects.policy import AttachmentError, FileSend, UploadRequest
from mqchat.objects.signing import Grant, UrlRefused, UrlSigner, derive_key
from mqchat.objects.sniff import image_size, sniff
from mqchat.objects.thumbnails import BadImage, make_thumbnail
from mqchat.objects.uploads import Upload

LIMITS = ObjectsSettings()
SIGNER = UrlSigner(derive_key("a-deployment-secret-of-enough-length-0123"))


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), (200, 10, 10, 128) if mode == "RGBA" else (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def parts(url: str) -> tuple[str, dict[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    key = parsed.path.removeprefix("/v1/objects/")
    return key, dict(urllib.parse.parse_qsl(parsed.query))


# --- signing ---------------------------------------------------------------------------------------

def test_a_signed_url_verifies_until_it_expires() -> None:
    url = SIGNER.url(Grant("get", "uploads/u1/original", 1000, filename="a.png"))
    key, query = parts(url)
    assert SIGNER.verify("get", key, query, now=999) == Grant("get", "uploads/u1/original", 1000, filename="a.png")
    with pytest.raises(UrlRefused) as caught:
        SIGNER.verify("get", key, query, now=1000)
    assert caught.value.code == "url_expired"


@pytest.mark.parametrize("change", [
    ("exp", "99999"), ("sig", "AAAA"), ("fn", "other.png"), ("op", "put"), ("sig", None), ("exp", "soon"),
])
def test_any_change_to_a_signed_url_is_refused_as_invalid(change: tuple[str, str | None]) -> None:
    key, query = parts(SIGNER.url(Grant("get", "uploads/u1/original", 1000, filename="a.png")))
    name, value = change
    if value is None:
        del query[name]
    else:
        query[name] = value
    with pytest.raises(UrlRefused) as caught:
        SIGNER.verify("get", key, query, now=10)
    assert caught.value.code == "url_invalid"


def test_a_url_is_bound_to_its_key_its_operation_and_the_signing_key() -> None:
    key, query = parts(SIGNER.url(Grant("put", "uploads/u1/incoming", 1000, content_type="image/png", max_bytes=5)))
    for other_key in ("uploads/u2/incoming", "uploads/u1/original"):
        with pytest.raises(UrlRefused):
            SIGNER.verify("put", other_key, query, now=10)
    with pytest.raises(UrlRefused):
        SIGNER.verify("get", key, query, now=10)
    with pytest.raises(UrlRefused):
        UrlSigner(derive_key("another-deployment-secret-of-enough-length")).verify("put", key, query, now=10)
    query["n"] = "5000000"
    with pytest.raises(UrlRefused):
        SIGNER.verify("put", key, query, now=10)


def test_a_path_traversal_key_never_verifies() -> None:
    _key, query = parts(SIGNER.url(Grant("get", "uploads/u1/original", 1000)))
    with pytest.raises(UrlRefused):
        SIGNER.verify("get", "uploads/u1/../../../etc/passwd", query, now=10)


def test_urls_carry_the_public_base_when_configured() -> None:
    signer = UrlSigner(derive_key("a-deployment-secret-of-enough-length-0123"), "https://chat.example.com/")
    assert signer.url(Grant("get", "k", 5)).startswith("https://chat.example.com/v1/objects/k?")
    assert SIGNER.url(Grant("get", "k", 5)).startswith("/v1/objects/k?")


# --- sniffing --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("head", "expected"), [
    (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"\xff\xd8\xff\xe0....", "image/jpeg"),
    (b"GIF89a...", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"%PDF-1.7", "application/pdf"),
    (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
    (b"OggS\x00", "audio/ogg"),
    (b"ID3\x03", "audio/mpeg"),
    (b"plain text, caf\xc3\xa9", "text/plain"),
    (b"ends inside a character \xc3", "text/plain"),
    (b"\x00\x01\x02binary", None),
    (b"\xc3\x28 not utf-8", None),
    (b"", None),
])
def test_sniff_knows_files_by_their_first_bytes(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def test_image_size_reads_only_the_header() -> None:
    assert image_size(png(30, 20)) == (30, 20)
    assert image_size(jpeg(7, 9)) == (7, 9)
    assert image_size(b"\x89PNG\r\n\x1a\n garbage") is None


# --- upload rules ----------------------------------------------------------------------------------

def test_an_upload_request_is_normalised() -> None:
    req = policy.check_upload_request(UploadRequest("c1", "../../etc/Pho\u0301to\x00.PNG", "Image/PNG; x=y", 10),
                                      LIMITS)
    assert req == UploadRequest("c1", "Phóto.PNG", "image/png", 10)


@pytest.mark.parametrize(("size", "ctype", "name", "code", "status"), [
    (LIMITS.max_upload_bytes + 1, "image/png", "a.png", "upload_too_large", 413),
    (0, "image/png", "a.png", "invalid_size", 422),
    (-5, "image/png", "a.png", "invalid_size", 422),
    (10, "text/html", "a.html", "forbidden_type", 415),
    (10, "image/svg+xml", "a.svg", "forbidden_type", 415),
    (10, "image/png", "../", "invalid_filename", 422),
    (10, "image/png", "\x00\x01", "invalid_filename", 422),
    (10, "image/png", "a" * 300, "invalid_filename", 422),
])
def test_bad_upload_requests_are_refused(size: int, ctype: str, name: str, code: str, status: int) -> None:
    with pytest.raises(AttachmentError) as caught:
        policy.check_upload_request(UploadRequest("c1", name, ctype, size), LIMITS)
    assert (caught.value.code, caught.value.status) == (code, status)


def upload(**changes: object) -> Upload:
    base = Upload("u" + "0" * 32, "c1", "alice", "a.png", "image/png", 100, created_ms=0, expires_ms=1000,
                  state="ready")
    return Upload(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def test_stored_bytes_must_match_what_was_declared() -> None:
    policy.check_stored(upload(state="pending"), 100, "image/png", LIMITS)
    for size, sniffed, code in [(99, "image/png", "size_mismatch"), (100, "text/plain", "type_mismatch"),
                                (100, None, "type_mismatch"), (LIMITS.max_upload_bytes + 1, "image/png",
                                                               "upload_too_large")]:
        with pytest.raises(AttachmentError) as caught:
            policy.check_stored(upload(state="pending"), size, sniffed, LIMITS)
        assert caught.value.code == code


@pytest.mark.parametrize(("found", "user", "channel", "now", "code"), [
    (None, "alice", "c1", 0, "upload_not_found"),
    (upload(), "bob", "c1", 0, "upload_not_yours"),
    (upload(), "alice", "c2", 0, "upload_not_yours"),
    (upload(state="pending"), "alice", "c1", 0, "upload_incomplete"),
    (upload(state="attached", cmid="m1"), "alice", "c1", 0, "upload_used"),
    (upload(), "alice", "c1", 1000, "upload_expired"),
])
def test_file_sends_that_may_not_use_the_upload(found: Upload | None, user: str, channel: str, now: int,
                                                code: str) -> None:
    with pytest.raises(AttachmentError) as caught:
        policy.check_file_send(FileSend(upload="u" + "0" * 32), found, user=user, channel=channel, now_ms=now)
    assert caught.value.code == code


def test_a_file_send_with_a_ready_upload_of_the_sender_in_the_channel_passes() -> None:
    policy.check_file_send(FileSend(upload="u" + "0" * 32, caption="look"), upload(), user="alice", channel="c1",
                           now_ms=999)
    with pytest.raises(AttachmentError, match="caption_too_long"):
        policy.check_file_send(FileSend(upload="u" + "0" * 32, caption="x" * 4001), upload(), user="alice",
                               channel="c1", now_ms=0)


# --- thumbnails ------------------------------------------------------------------------------------

def test_a_thumbnail_is_bounded_and_keeps_the_aspect() -> None:
    thumb = make_thumbnail(jpeg(1200, 600), max_px=320, max_pixels=10_000_000)
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/jpeg", 320, 160)
    assert (thumb.source_width, thumb.source_height) == (1200, 600)
    with Image.open(io.BytesIO(thumb.data)) as img:
        assert img.size == (320, 160)


def test_a_transparent_image_gets_a_png_thumbnail() -> None:
    thumb = make_thumbnail(png(100, 400, "RGBA"), max_px=64, max_pixels=10_000_000)
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/png", 16, 64)


@pytest.mark.parametrize("side", [8_000, 20_000])
def test_too_many_pixels_is_refused_before_decoding(side: int) -> None:
    # A file of a few hundred bytes that declares a huge image: under Pillow's own limit our limit
    # refuses it, above it Pillow's DecompressionBombError does; neither decodes a pixel.
    with pytest.raises(BadImage, match=r"pixels|decompression bomb"):
        make_thumbnail(_declared_png(side, side), max_px=320, max_pixels=50_000_000)


def _declared_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data", [b"", b"not an image at all", png(50, 50)[:60], b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_broken_images_are_bad_images(data: bytes) -> None:
    with pytest.raises(BadImage):
        make_thumbnail(data, max_px=320, max_pixels=50_000_000)
