"""Bearer tokens for AUTH_MODE=jwt: verification, Connexion's security hook, and the
OpenAPI document each mode serves.

A token is a JWT signed with HS256 (JWT_SECRET) or RS256 (JWT_PUBLIC_KEY); only the one
configured algorithm is accepted. Claims:

    {"sub": "usr_coord99",                          required: the caller's user id
     "exp": 1767225600,                             required: expiry (seconds since epoch)
     "orgs": {"org_001": ["coordinator"]},          optional: roles per organisation
     "aud": "...", "iss": "..."}                    required when JWT_AUDIENCE/JWT_ISSUER set

The rules on what a caller may do live in models/access.py.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jwt
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest
from connexion.security import SECURITY_HANDLERS, BearerSecurityHandler

from claims_realtime.models.access import Principal
from claims_realtime.settings import Settings

#: The OpenAPI security scheme jwt mode puts on the management API.
BEARER_SCHEME = "BearerAuth"
#: Tags whose operations stay open in every mode (probes).
OPEN_TAGS = frozenset({"health"})
REALM = "claims-realtime"
#: The document's ExternalId: what a user or organisation id may look like (the whole
#: string: `fullmatch`, as `$` would also match before a final newline).
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: Clock skew tolerated on `exp`/`nbf`/`iat`, in seconds.
LEEWAY_SECONDS = 30


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (never the token itself)."""


class TokenVerifier:
    """Checks a bearer token's signature and claims; answers the caller it names."""

    def __init__(
        self,
        key: Any,
        algorithm: str,
        *,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.key = key
        self.algorithm = algorithm
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier of jwt mode; None in public mode. A bad key fails here, at start-up."""
        if settings.auth_mode != "jwt":
            return None
        if settings.jwt_public_key:
            algorithm = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
            try:
                key = algorithm.prepare_key(settings.jwt_public_key)
            except (jwt.InvalidKeyError, ValueError) as exc:
                raise ValueError(f"JWT_PUBLIC_KEY is not an RSA public key: {exc}") from None
            if not hasattr(key, "public_numbers"):
                raise ValueError("JWT_PUBLIC_KEY must be a public key, not a private one")
            return cls(key, "RS256", audience=settings.jwt_audience, issuer=settings.jwt_issuer)
        if not settings.jwt_secret:
            raise ValueError("AUTH_MODE=jwt needs JWT_SECRET or JWT_PUBLIC_KEY")
        return cls(
            settings.jwt_secret.encode(),
            "HS256",
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )

    def verify(self, token: str) -> Principal:
        required = ["exp", "sub"]
        required += ["aud"] if self.audience else []
        required += ["iss"] if self.issuer else []
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token has no '{exc.claim}' claim.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The token is not meant for this service (aud).") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("The token was not issued by the expected issuer (iss).") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("The token's signature is not valid.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The token is malformed or not acceptable.") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The caller named by verified claims; InvalidToken when `sub` or `orgs` are malformed."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _EXTERNAL_ID.fullmatch(sub):
        raise InvalidToken("The token's 'sub' is not a valid user id.")
    orgs = claims.get("orgs", {})
    if not isinstance(orgs, dict):
        raise InvalidToken("The token's 'orgs' must map organisation ids to lists of roles.")
    roles: dict[str, frozenset[str]] = {}
    for organisation_id, names in orgs.items():
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidToken("The token's 'orgs' must map organisation ids to lists of roles.")
        roles[organisation_id] = frozenset(names)
    return Principal(user_id=sub, roles=roles)


def bearer_problem(detail: str, error: str | None = "invalid_token") -> ProblemException:
    """401 with the RFC 6750 challenge (no error code when no credentials were sent)."""
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    return ProblemException(
        status=401,
        title="Unauthorized",
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


def check_bearer_token(token: str, request: ConnexionRequest) -> dict[str, Any]:
    """Connexion's `x-bearerInfoFunc`: the token's caller, or a 401 saying why not."""
    verifier: TokenVerifier | None = request.state.token_verifier
    if verifier is None:  # the document is only secured in jwt mode; never reached otherwise
        raise bearer_problem("Bearer tokens are not accepted in this mode.")
    try:
        principal = verifier.verify(token)
    except InvalidToken as exc:
        raise bearer_problem(str(exc)) from None
    return {"sub": principal.user_id, "principal": principal}


class StrictBearerHandler(BearerSecurityHandler):
    """Connexion's bearer handler, answering a missing or non-Bearer Authorization header
    with our 401 (which carries `WWW-Authenticate: Bearer`) instead of a bare one.
    `_get_verify_func` is the method Connexion's documentation has custom handlers override."""

    def _get_verify_func(self, token_info_func: Any) -> Any:
        check = self.check_bearer_token(token_info_func)

        def wrapper(request: ConnexionRequest) -> Any:
            authorization = request.headers.get("Authorization", "")
            scheme, _, token = authorization.strip().partition(" ")
            if not authorization:
                raise bearer_problem("A bearer token is required (Authorization: Bearer).", None)
            if scheme.lower() != "bearer" or not token.strip():
                raise bearer_problem("The Authorization header must be 'Bearer <token>'.")
            return check(request, token.strip())

        return wrapper


#: Connexion's `security_map`: our bearer handler, the stock ones otherwise (the ingestion
#: API's `X-Publisher-Key` is Connexion's apiKey handler with `check_publisher_key`).
SECURITY_MAP: dict[str, Any] = {**SECURITY_HANDLERS, "bearer": StrictBearerHandler}


def document_for_mode(document: dict[str, Any], auth_mode: str) -> dict[str, Any]:
    """The OpenAPI document this mode serves (a copy; `document` is left alone).

    The document on disk is the contract's: the management API is public. In jwt mode every
    operation without its own `security` (the ingestion API keeps its publisher key), except
    the health probes, requires a bearer token, so Connexion enforces it and clients and
    Schemathesis see it declared.
    """
    document = copy.deepcopy(document)
    if auth_mode != "jwt":
        return document
    verbs = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    for item in document["paths"].values():
        for verb, operation in item.items():
            if verb not in verbs or "security" in operation:
                continue
            if OPEN_TAGS.intersection(operation.get("tags", [])):
                continue
            operation["security"] = [{BEARER_SCHEME: []}]
    return document
