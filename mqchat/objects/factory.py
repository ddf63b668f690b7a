"""Open the configured object store and the attachment service. The one place that maps
``objects.backend`` to an implementation."""

from __future__ import annotations

from mqchat import auth
from mqchat.config import Settings
from mqchat.errors import ConfigError
from mqchat.objects.base import ObjectStore
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.service import Attachments, ThumbnailQueue
from mqchat.objects.signing import UrlSigner, derive_key
from mqchat.objects.uploads import SqliteUploadStore

UPLOADS_DB = "uploads.db"


def url_signer(settings: Settings) -> UrlSigner:
    """The ``local`` backend's URL signer: its key comes from ``objects.signing_secret``, else from the
    JWT signing secret.

    Raises:
        ConfigError: neither is available (an external token issuer and no ``objects.signing_secret``).
    """
    secret = settings.objects.signing_secret
    if secret is not None:
        raw = secret.get_secret_value()
    else:
        raw_key = auth.load_keys(settings).signing_key
        if raw_key is None:
            raise ConfigError("objects.backend local needs objects.signing_secret when tokens come from an "
                              "external issuer")
        raw = raw_key
    return UrlSigner(derive_key(raw), settings.objects.public_url or "")


def open_object_store(settings: Settings) -> ObjectStore:
    """The object store named by ``objects.backend`` (nothing connects yet)."""
    if settings.objects.backend == "local":
        return LocalObjectStore(settings.data_dir / settings.objects.local_dir, url_signer(settings))
    # Imported here: boto3 is loaded only by deployments that use it.
    from mqchat.objects.s3 import S3ObjectStore

    return S3ObjectStore.from_settings(settings.objects)


def open_attachments(settings: Settings, thumbnails: ThumbnailQueue | None = None) -> Attachments:
    """The attachment service of this deployment; upload records in ``<data_dir>/uploads.db``."""
    return Attachments(settings.objects, open_object_store(settings),
                       SqliteUploadStore(settings.data_dir / UPLOADS_DB), thumbnails)
