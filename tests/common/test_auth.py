from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mqchat import auth
from mqchat.config import load_settings
from mqchat.errors import AuthError, ConfigError

NOW = 1_800_000_000
SECRET = "s" * 40


def keys(**kw: object) -> auth.KeySet:
    base: dict[str, object] = {"signing_key": SECRET, "verify_key": SECRET, "algorithms": ("HS256",),
                               "audience": "mqchat", "issuer": "mqchat", "ttl_s": 3600, "leeway_s": 30}
    base.update(kw)
    return auth.KeySet(**base)  # type: ignore[arg-type]


def _tamper(token: str) -> str:
    """Swap the payload for one naming another user, keeping the original signature."""
    import base64
    import json

    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_issued_token_verifies_to_the_principal() -> None:
    token = auth.issue(keys(), user_id="u1", device_id="d1", now=NOW)
    p = auth.verify(keys(), token, now=NOW + 10)
    assert p == auth.Principal("u1", "d1", "device", NOW + 3600, float(NOW))
    assert p.client_id == "u1:d1"


@pytest.mark.parametrize(("now", "reason"), [(NOW + 3600 + 31, "expired"), (NOW - 31, "not_yet_valid")])
def test_time_claims_are_checked_with_leeway(now: int, reason: str) -> None:
    token = auth.issue(keys(), user_id="u1", device_id="d1", now=NOW)
    auth.verify(keys(), token, now=NOW + 3600 + 30)  # inside the leeway
    with pytest.raises(AuthError) as info:
        auth.verify(keys(), token, now=now)
    assert info.value.reason == reason


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda t: auth.issue(keys(signing_key="x" * 40), user_id="u1", device_id="d1", now=NOW), "bad_signature"),
    (lambda t: jwt.encode({"sub": "u1", "dev": "d1", "aud": "other", "iss": "mqchat", "exp": NOW + 60}, SECRET),
     "bad_audience"),
    (lambda t: jwt.encode({"sub": "u1", "dev": "d1", "aud": "mqchat", "iss": "evil", "exp": NOW + 60}, SECRET),
     "bad_issuer"),
    (lambda t: jwt.encode({"sub": "u1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60}, SECRET), "bad_claims"),
    (lambda t: jwt.encode({"sub": "u/1", "dev": "d1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60}, SECRET),
     "bad_claims"),
    (lambda t: jwt.encode({"sub": "u1", "dev": "d1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60,
                           "role": "admin"}, SECRET), "bad_claims"),
    (lambda t: _tamper(t), "bad_signature"),
    (lambda t: "not.a.jwt", "malformed"),
    (lambda t: "", "malformed"),
    # alg=none must never be accepted
    (lambda t: jwt.encode({"sub": "u1", "dev": "d1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60}, "",
                          algorithm="none"), "bad_signature"),
])
def test_bad_tokens_are_refused_with_a_reason(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    token = mutate(auth.issue(keys(), user_id="u1", device_id="d1", now=NOW))
    with pytest.raises(AuthError) as info:
        auth.verify(keys(), token, now=NOW)
    assert info.value.reason == reason


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_external_issuer_public_keys(tmp_path: Path, algorithm: str) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS256" \
        else ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "issuer.pem").write_bytes(pem)
    settings = load_settings(data_dir=tmp_path, auth={"public_key_file": tmp_path / "issuer.pem",
                                                       "algorithms": [algorithm]})
    ks = auth.load_keys(settings)
    assert not ks.can_issue
    token = jwt.encode({"sub": "u1", "dev": "d1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60}, private,
                       algorithm=algorithm)
    assert auth.verify(ks, token, now=NOW).user_id == "u1"
    # An HS256 token signed with the public key as secret (key confusion) is refused.
    forged = jwt.encode({"sub": "u1", "dev": "d1", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60},
                        "x" * 40, algorithm="HS256")
    with pytest.raises(AuthError):
        auth.verify(ks, forged, now=NOW)
    with pytest.raises(ConfigError, match="external issuer"):
        auth.issue(ks, user_id="u1", device_id="d1", now=NOW)


def test_dev_secret_is_created_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="no JWT key"):
        auth.load_keys(settings)
    first = auth.load_keys(settings, create=True)
    again = auth.load_keys(settings, create=True)
    assert first.signing_key == again.signing_key
    assert ((tmp_path / auth.SECRET_FILE).stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(("client_id", "username"), [("u1:d2", "u1"), ("u2:d1", "u1"), ("u1:d1", "u2"),
                                                     (None, "u1"), ("u1:d1", None)])
def test_connect_identity_must_match_the_token(client_id: str | None, username: str | None) -> None:
    p = auth.Principal("u1", "d1", "device", NOW)
    auth.check_connect_identity(p, client_id_="u1:d1", username="u1")
    with pytest.raises(AuthError, match="identity_mismatch"):
        auth.check_connect_identity(p, client_id_=client_id, username=username)


def test_a_service_may_add_an_instance_suffix_to_its_client_id_and_a_device_may_not() -> None:
    service = auth.Principal("svc-workers", "w", "service", NOW)
    auth.check_connect_identity(service, client_id_="svc-workers:w~w12-host", username="svc-workers")
    with pytest.raises(AuthError, match="identity_mismatch"):
        auth.check_connect_identity(service, client_id_="svc-workers:x~w12-host", username="svc-workers")
    device = auth.Principal("u1", "d1", "device", NOW)
    with pytest.raises(AuthError, match="identity_mismatch"):
        auth.check_connect_identity(device, client_id_="u1:d1~other", username="u1")


def test_service_user_ids_are_reserved_for_service_tokens() -> None:
    device = jwt.encode({"sub": "svc-bridge", "dev": "b0", "aud": "mqchat", "iss": "mqchat", "exp": NOW + 60},
                        SECRET)
    with pytest.raises(AuthError) as info:
        auth.verify(keys(), device, now=NOW)
    assert info.value.reason == "bad_claims"
    service = auth.issue(keys(), user_id="svc-bridge", device_id="b0", role="service", now=NOW)
    assert auth.verify(keys(), service, now=NOW).is_service


def test_service_tokens_name_their_service() -> None:
    token = auth.issue(keys(), user_id="svc-bridge", device_id="b0", role="service", now=NOW, service="bridge")
    assert auth.verify(keys(), token, now=NOW).service == "bridge"
    with pytest.raises(ConfigError):
        auth.issue(keys(), user_id="u1", device_id="d1", now=NOW, service="bridge")  # devices have no scope
    forged = jwt.encode({"sub": "svc-x", "dev": "b0", "role": "service", "svc": "everything", "aud": "mqchat",
                         "iss": "mqchat", "exp": NOW + 60}, keys().verify_key, algorithm="HS256")
    with pytest.raises(AuthError) as info:
        auth.verify(keys(), forged, now=NOW)
    assert info.value.reason == "bad_claims"
