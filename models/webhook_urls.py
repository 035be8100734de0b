"""Where a fallback webhook may be sent: checked when it is set and again, on the addresses
actually connected to, when it is sent (a name can resolve elsewhere by then).

`https://` only, and only to public addresses: a webhook URL is chosen by an API caller, and
the server must not become their way into its own network (loopback, private, link-local and
cloud metadata addresses, ...). Hosts in WEBHOOK_ALLOWED_HOSTS are trusted: plain http and
any address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from claims_realtime.models.errors import InvalidInput

FIELD = "fallback.url"
MAX_URL_LENGTH = 2048
#: How long a host name may take to resolve when a fallback is set.
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_address(address: IPAddress) -> bool:
    """Not a public unicast address: loopback, private, link-local (which holds the cloud
    metadata service), shared, reserved, multicast, unspecified, documentation, ..."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def host_of(url: str) -> str:
    """The URL's host, lower case, without IPv6 brackets."""
    return (urlsplit(url).hostname or "").lower()


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """The URL's host if the URL may be used; InvalidInput naming fallback.url otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(FIELD, f"fallback.url is longer than {MAX_URL_LENGTH} characters")
    # urlsplit drops some of these silently, and an HTTP client would refuse them later.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidInput(FIELD, "fallback.url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(FIELD, f"fallback.url is not a valid URL: {exc}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput(FIELD, "fallback.url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(FIELD, "fallback.url must not carry credentials (user:password@)")
    if parts.fragment:
        raise InvalidInput(FIELD, "fallback.url must not have a #fragment")
    if port == 0:
        raise InvalidInput(FIELD, "fallback.url has port 0")
    allowed = host in allowed_hosts
    if parts.scheme == "http" and not allowed:
        raise InvalidInput(
            FIELD, f"fallback.url must use https:// ({host} is not in WEBHOOK_ALLOWED_HOSTS)"
        )
    if not allowed:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and refused_address(literal):
            raise InvalidInput(FIELD, refusal(host, str(literal)))
    return host


def refusal(host: str, address: str) -> str:
    return (
        f"fallback.url's host {host} is at {address}, which is not a public address "
        "(add the host to WEBHOOK_ALLOWED_HOSTS to allow it)"
    )


async def check_resolves(url: str, allowed_hosts: tuple[str, ...]) -> None:
    """check_url, and the host's every address public (unless the host is allowed)."""
    host = check_url(url, allowed_hosts)
    if host in allowed_hosts:
        return
    try:
        ipaddress.ip_address(host)
        return  # a literal address: check_url checked it
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, ValueError):
        # ValueError: a name IDNA cannot encode (an empty or overlong label), like `a..b`.
        raise InvalidInput(FIELD, f"fallback.url's host {host} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if refused_address(address):
            raise InvalidInput(FIELD, refusal(host, str(address)))
