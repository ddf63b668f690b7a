"""Open the configured object store and the attachment service. The one place that maps
``objects.backend`` to an implementation."""

from __future__ import annotations

from mqchat.config import Settings
from mqchat.errors import ConfigError
from mqchat.objects.base import ObjectStore
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.service import Attachments, ThumbnailQueue
from mqchat.objects.signing import UrlSigner, derive_key
from mqchat.objects.uploads import SqliteUploadStore

UPLOADS_DB = "uploads.db"


def url_signer(settings: Settings, jwt_secret: str | None) -> UrlSigner:
    """The ``local`` backend's URL signer: its key comes from ``objects.signing_secret``, else from the
    JWT signing secret ``jwt_secret`` (``auth.KeySet.signing_key``).

    Raises:
        ConfigError: neither is available (an external token issuer and no ``objects.signing_secret``).
    """
    secret = settings.objects.signing_secret
    if secret is not None:
        raw = secret.get_secret_value()
    elif jwt_secret is not None:
        raw = jwt_secret
    else:
        raise ConfigError("objects.backend local needs objects.signing_secret when tokens come from an "
                          "external issuer")
    return UrlSigner(derive_key(raw), settings.objects.public_url or "")


def open_object_store(settings: Settings, jwt_secret: str | None) -> ObjectStore:
    """The object store named by ``objects.backend`` (nothing connects yet).

    Args:
        settings: the process settings.
        jwt_secret: the deployment's JWT signing secret (``auth.load_keys(settings).signing_key``), from
            which the ``local`` backend derives its URL signing key unless ``objects.signing_secret`` is set.
    """
    if settings.objects.backend == "local":
        return LocalObjectStore(settings.data_dir / settings.objects.local_dir, url_signer(settings, jwt_secret))
    # Imported here: boto3 is loaded only by deployments that use it.
    from mqchat.objects.s3 import S3ObjectStore

    return S3ObjectStore.from_settings(settings.objects)


def open_attachments(settings: Settings, jwt_secret: str | None,
                     thumbnails: ThumbnailQueue | None = None) -> Attachments:
    """The attachment service of this deployment; upload records in ``<data_dir>/uploads.db``."""
    return Attachments(settings.objects, open_object_store(settings, jwt_secret),
                       SqliteUploadStore(settings.data_dir / UPLOADS_DB), thumbnails)
