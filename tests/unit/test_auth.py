"""AUTH_MODE=jwt pieces without HTTP: token verification, the access rules, the settings,
the document each mode serves, and the JSON log format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from claims_realtime.app import load_spec
from claims_realtime.auth import (
    BEARER_SCHEME,
    InvalidToken,
    TokenVerifier,
    document_for_mode,
    principal_from_claims,
)
from claims_realtime.cors import socket_cors
from claims_realtime.logs import JsonFormatter
from claims_realtime.models import access
from claims_realtime.models.access import Policy, Principal
from claims_realtime.models.channel import Channel, ChannelStatus, SubscriptionType
from claims_realtime.models.errors import ChannelNotFound, Forbidden
from claims_realtime.models.subscriptions import ChannelFilter
from claims_realtime.settings import Settings
from tests.tokens import AUDIENCE, ISSUER, JWT_SECRET, make_token, rsa_private_key, rsa_public_pem

HS256 = Settings(auth_mode="jwt", jwt_secret=JWT_SECRET)
POLICY = Policy()


def hs256(**overrides: Any) -> TokenVerifier:
    verifier = TokenVerifier.from_settings(replace(HS256, **overrides))
    assert verifier is not None
    return verifier


def rs256(**overrides: Any) -> TokenVerifier:
    settings = replace(HS256, jwt_secret=None, jwt_public_key=rsa_public_pem(), **overrides)
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    return verifier


# -- token verification ---------------------------------------------------------------------


def test_valid_hs256_token_names_the_caller_and_roles() -> None:
    token = make_token("usr_coord99", {"org_001": ["coordinator"], "org_002": ["viewer"]})

    principal = hs256().verify(token)

    assert principal.user_id == "usr_coord99"
    assert principal.roles == {
        "org_001": frozenset({"coordinator"}),
        "org_002": frozenset({"viewer"}),
    }


def test_valid_rs256_token() -> None:
    token = make_token("usr_owner", key=rsa_private_key(), algorithm="RS256")

    assert rs256().verify(token) == Principal("usr_owner", {})


def test_public_key_may_be_a_file(tmp_path: Path) -> None:
    pem = tmp_path / "jwt.pem"
    pem.write_text(rsa_public_pem())
    settings = Settings.from_env({"AUTH_MODE": "jwt", "JWT_PUBLIC_KEY": str(pem)})
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    token = make_token("usr_owner", key=rsa_private_key(), algorithm="RS256")
    assert verifier.verify(token).user_id == "usr_owner"


def test_expired_token_is_refused() -> None:
    with pytest.raises(InvalidToken, match="expired"):
        hs256().verify(make_token(expires_in=-3600))


def test_wrong_audience_is_refused() -> None:
    verifier = hs256(jwt_audience=AUDIENCE)

    assert verifier.verify(make_token(aud=AUDIENCE)).user_id == "usr_owner"
    with pytest.raises(InvalidToken, match="aud"):
        verifier.verify(make_token(aud="another-service"))
    with pytest.raises(InvalidToken, match="'aud'"):
        verifier.verify(make_token())


def test_wrong_issuer_is_refused() -> None:
    verifier = hs256(jwt_issuer=ISSUER)

    assert verifier.verify(make_token(iss=ISSUER)).user_id == "usr_owner"
    with pytest.raises(InvalidToken, match="iss"):
        verifier.verify(make_token(iss="https://evil.example.com"))


def test_wrong_signature_is_refused() -> None:
    with pytest.raises(InvalidToken, match="signature"):
        hs256().verify(make_token(key="another-secret-0123456789abcdef-0123456789"))
    with pytest.raises(InvalidToken, match="signature"):
        other = make_token(key=rsa_private_key(), algorithm="RS256")
        rs256().verify(other[: other.rindex(".") + 1] + "AAAA" + other[other.rindex(".") + 5 :])


def test_only_the_configured_algorithm_is_accepted() -> None:
    # RS256 configured: a token "signed" with HS256 using the public key as the secret (the
    # classic algorithm confusion) and an unsigned one are both refused.
    with pytest.raises(InvalidToken):
        rs256().verify(_hs256_by_hand({"sub": "usr_x", "exp": 2**40}, rsa_public_pem().encode()))
    with pytest.raises(InvalidToken):
        hs256().verify(make_token(key=None, algorithm="none"))
    with pytest.raises(InvalidToken):
        hs256().verify(make_token(key=rsa_private_key(), algorithm="RS256"))


def _hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """What PyJWT refuses to make: an HS256 token keyed with PEM text."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_token_missing_a_required_claim_is_refused(missing: str) -> None:
    token = make_token(**{missing: None}) if missing == "exp" else make_token(sub=None)

    with pytest.raises(InvalidToken, match=f"'{missing}'"):
        hs256().verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": ""},
        {"sub": 42},
        {"sub": "usr owner"},
        {"sub": "u" * 65},
        {"sub": "usr_1", "orgs": ["org_001"]},
        {"sub": "usr_1", "orgs": {"org_001": "coordinator"}},
        {"sub": "usr_1", "orgs": {"org_001": [1]}},
    ],
)
def test_malformed_claims_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        principal_from_claims(claims)


@pytest.mark.parametrize("sub", ["usr_1\n", "usr_1\r\n", " usr_1", "usr_1\n\n"])
def test_sub_must_be_a_user_id_as_a_whole(sub: str) -> None:
    """A `$`-anchored pattern would let "usr_1\\n" through, naming another user than usr_1."""
    with pytest.raises(InvalidToken, match="'sub' is not a valid user id"):
        principal_from_claims({"sub": sub})
    with pytest.raises(InvalidToken, match="'sub' is not a valid user id"):
        hs256().verify(make_token(sub))
    assert principal_from_claims({"sub": "usr_1"}) == Principal("usr_1", {})
    assert hs256().verify(make_token("usr_1")).user_id == "usr_1"


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        hs256().verify("not-a-jwt")


def test_public_mode_has_no_verifier() -> None:
    assert TokenVerifier.from_settings(Settings()) is None


def test_a_private_key_is_not_accepted_as_the_public_key() -> None:
    from cryptography.hazmat.primitives import serialization

    private_pem = (
        rsa_private_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="public key"):
        TokenVerifier.from_settings(replace(HS256, jwt_secret=None, jwt_public_key=private_pem))


# -- settings -------------------------------------------------------------------------------


def test_access_settings_default_to_public_same_origin_text() -> None:
    settings = Settings.from_env({})

    assert settings.auth_mode == "public"
    assert settings.cors_allowed_origins == ()
    assert settings.log_format == "text"
    assert settings.jwt_coordinator_roles == ("coordinator", "admin")


def test_access_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "AUTH_MODE": "JWT",
            "JWT_SECRET": JWT_SECRET,
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_ISSUER": ISSUER,
            "JWT_COORDINATOR_ROLES": "lead, owner",
            "CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000",
            "LOG_FORMAT": "json",
        }
    )

    assert settings.auth_mode == "jwt" and settings.jwt_secret == JWT_SECRET
    assert (settings.jwt_audience, settings.jwt_issuer) == (AUDIENCE, ISSUER)
    assert settings.jwt_coordinator_roles == ("lead", "owner")
    assert settings.cors_allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.log_format == "json"


def test_public_key_text_with_escaped_newlines_is_accepted() -> None:
    escaped = rsa_public_pem().strip().replace("\n", "\\n")
    settings = Settings.from_env({"AUTH_MODE": "jwt", "JWT_PUBLIC_KEY": escaped})
    assert settings.jwt_public_key == rsa_public_pem().strip()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTH_MODE": "oauth"}, "AUTH_MODE"),
        ({"AUTH_MODE": "jwt"}, "exactly one of JWT_SECRET or JWT_PUBLIC_KEY"),
        ({"AUTH_MODE": "jwt", "JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"AUTH_MODE": "jwt", "JWT_PUBLIC_KEY": "/no/such.pem"}, "JWT_PUBLIC_KEY"),
        ({"CORS_ALLOWED_ORIGINS": "https://app.example.com/path"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "app.example.com"}, "CORS_ALLOWED_ORIGINS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_access_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_both_keys_are_refused() -> None:
    env = {"AUTH_MODE": "jwt", "JWT_SECRET": JWT_SECRET, "JWT_PUBLIC_KEY": rsa_public_pem()}
    with pytest.raises(ValueError, match="exactly one"):
        Settings.from_env(env)


# -- the access rules -----------------------------------------------------------------------

COORDINATOR = Principal("usr_coord99", {"org_001": frozenset({"coordinator"})})
CLAIMANT = Principal("usr_owner", {"org_001": frozenset({"claimant"})})


def channel(user_id: str, organisation_id: str | None = None) -> Channel:
    kind = SubscriptionType.ORGANISATION_CLAIMS if organisation_id else SubscriptionType.USER_CLAIMS
    return Channel(
        id="chan_abc",
        subscription_type=kind,
        organisation_id=organisation_id,
        user_id=user_id,
        event_types=[],
        status=ChannelStatus.CONNECTED,
        token_hash="x",
        created_at=datetime.now(UTC),
    )


def test_public_mode_allows_everything() -> None:
    access.authorize_create(None, POLICY, SubscriptionType.USER_CLAIMS, user_id="anyone")
    org = SubscriptionType.ORGANISATION_CLAIMS
    access.authorize_create(None, POLICY, org, user_id="anyone", organisation_id="org_9")
    where = ChannelFilter(user_id="someone")
    assert access.scope_listing(None, where) is where
    access.check_channel(None, POLICY, channel("someone", "org_9"), rearm=True)


def test_own_user_channel_may_be_created() -> None:
    access.authorize_create(CLAIMANT, POLICY, SubscriptionType.USER_CLAIMS, user_id="usr_owner")


def test_another_users_channel_may_not_be_created() -> None:
    with pytest.raises(Forbidden) as caught:
        access.authorize_create(
            CLAIMANT, POLICY, SubscriptionType.USER_CLAIMS, user_id="usr_someone_else"
        )
    assert caught.value.extensions() == {"field": "user_id"}


@pytest.mark.parametrize("role", ["coordinator", "admin"])
def test_organisation_channel_needs_a_coordinator_role(role: str) -> None:
    org = SubscriptionType.ORGANISATION_CLAIMS
    principal = Principal("usr_coord99", {"org_001": frozenset({role, "viewer"})})

    access.authorize_create(
        principal, POLICY, org, user_id="usr_coord99", organisation_id="org_001"
    )
    with pytest.raises(Forbidden) as caught:
        access.authorize_create(
            principal, POLICY, org, user_id="usr_coord99", organisation_id="org_002"
        )
    assert caught.value.extensions() == {"field": "organisation_id"}
    with pytest.raises(Forbidden):
        access.authorize_create(
            CLAIMANT, POLICY, org, user_id="usr_owner", organisation_id="org_001"
        )


def test_coordinator_roles_are_configurable() -> None:
    org = SubscriptionType.ORGANISATION_CLAIMS
    policy = Policy(coordinator_roles=("lead",))
    lead = Principal("usr_lead", {"org_001": frozenset({"lead"})})

    access.authorize_create(lead, policy, org, user_id="usr_lead", organisation_id="org_001")
    with pytest.raises(Forbidden):
        access.authorize_create(
            COORDINATOR, policy, org, user_id="usr_coord99", organisation_id="org_001"
        )


def test_listing_is_narrowed_to_the_caller() -> None:
    narrowed = access.scope_listing(CLAIMANT, ChannelFilter(organisation_id="org_001"))
    assert narrowed == ChannelFilter(organisation_id="org_001", user_id="usr_owner")
    assert access.scope_listing(CLAIMANT, ChannelFilter(user_id="usr_owner")).user_id == (
        "usr_owner"
    )
    with pytest.raises(Forbidden) as caught:
        access.scope_listing(CLAIMANT, ChannelFilter(user_id="usr_coord99"))
    assert caught.value.extensions() == {"field": "user_id"}


def test_another_users_channel_is_not_found() -> None:
    access.check_channel(CLAIMANT, POLICY, channel("usr_owner"))
    with pytest.raises(ChannelNotFound):
        access.check_channel(CLAIMANT, POLICY, channel("usr_coord99", "org_001"))


def test_rearming_an_organisation_channel_needs_the_role_still() -> None:
    mine = channel("usr_coord99", "org_001")
    demoted = Principal("usr_coord99", {"org_001": frozenset({"viewer"})})

    access.check_channel(COORDINATOR, POLICY, mine, rearm=True)
    access.check_channel(demoted, POLICY, mine)  # reading or closing it: still allowed
    with pytest.raises(Forbidden):
        access.check_channel(demoted, POLICY, mine, rearm=True)


# -- the document each mode serves ----------------------------------------------------------


def _secured_operations(document: dict[str, Any]) -> dict[str, list[dict[str, list[str]]]]:
    return {
        operation["operationId"]: operation.get("security", [])
        for item in document["paths"].values()
        for verb, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }


def test_public_mode_serves_the_contract_document() -> None:
    document = document_for_mode(load_spec(), "public")

    assert document == load_spec() and document is not load_spec()
    security = _secured_operations(document)
    assert not security["listSubscriptions"] and not security["reconnect"]


def test_jwt_mode_secures_the_management_api_only() -> None:
    security = _secured_operations(document_for_mode(load_spec(), "jwt"))

    for operation_id in (
        "listSubscriptions",
        "subscribeToOrganisationClaims",
        "subscribeToUserClaims",
        "getSubscription",
        "unsubscribe",
        "reconnect",
    ):
        assert security[operation_id] == [{BEARER_SCHEME: []}], operation_id
    assert security["publishClaimEvent"] == [{"PublisherKey": []}]
    assert security["publishClaimEventBatch"] == [{"PublisherKey": []}]
    assert security["getLiveness"] == [] and security["getReadiness"] == []
    assert "security" not in _secured_operations(load_spec())["reconnect"]


# -- CORS for Socket.IO and the log format --------------------------------------------------


def test_socket_cors_is_same_origin_only_by_default() -> None:
    assert socket_cors(()) is None  # Engine.IO's "same origin only"
    assert socket_cors(("*",)) == "*"
    check = socket_cors(("https://app.example.com",))
    assert callable(check)
    environ = {"HTTP_HOST": "rt.example.com", "wsgi.url_scheme": "https"}
    assert check("https://app.example.com", environ)
    assert check("https://rt.example.com", environ)  # our own origin stays allowed
    assert not check("https://evil.example.com", environ)


def test_json_log_lines_are_one_object_each() -> None:
    record = logging.LogRecord(
        "claims", logging.ERROR, __file__, 1, "channel %s closed", ("chan_1",), None
    )
    record.request_id = "req-123"
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "channel chan_1 closed"
    assert entry["level"] == "ERROR" and entry["logger"] == "claims"
    assert entry["request_id"] == "req-123"
    assert "RuntimeError: boom" in entry["exception"]
