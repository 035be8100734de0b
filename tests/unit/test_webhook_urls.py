"""Where a fallback webhook may point (models.webhook_urls): https only, public addresses
only, unless the host is in WEBHOOK_ALLOWED_HOSTS; every refusal names `fallback.url`."""

from __future__ import annotations

import pytest

from claims_realtime.models.errors import InvalidInput
from claims_realtime.models.webhook_urls import check_resolves, check_url


def refused(url: str, allowed: tuple[str, ...] = ()) -> str:
    with pytest.raises(InvalidInput) as caught:
        check_url(url, allowed)
    assert caught.value.field == "fallback.url"
    return caught.value.detail


async def refused_on_resolving(url: str, allowed: tuple[str, ...] = ()) -> str:
    with pytest.raises(InvalidInput) as caught:
        await check_resolves(url, allowed)
    assert caught.value.field == "fallback.url"
    return caught.value.detail


def test_a_public_https_url_is_taken() -> None:
    assert check_url("https://Hooks.Example.com:8443/a?b=c", ()) == "hooks.example.com"


def test_plain_http_only_for_allowed_hosts() -> None:
    assert "https://" in refused("http://example.com/hook")
    assert check_url("http://example.com/hook", ("example.com",)) == "example.com"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "0.0.0.0",
        "224.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[fd00::1]",
        "[fe80::1]",
        "[::]",
    ],
)
def test_non_public_literal_addresses_are_refused(host: str) -> None:
    assert "not a public address" in refused(f"https://{host}/x")


def test_allowed_hosts_may_be_private_addresses() -> None:
    assert check_url("http://127.0.0.1:9000/hook", ("127.0.0.1",)) == "127.0.0.1"
    assert check_url("https://[::1]/hook", ("::1",)) == "::1"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://example.com/hook#frag", "fragment"),
        ("ftp://example.com/", "https://"),
        ("https:///path-only", "https://"),
        ("example.com/hook", "https://"),
        ("https://example.com:99999/", "valid URL"),
        ("https://example.com:0/", "port 0"),
        ("https://[::1/", "valid URL"),
        ("https://example.com/a b", "control characters"),
        ("https://example.com/\nHost: evil", "control characters"),
        ("https://" + "a" * 2048 + ".com/", "longer than"),
    ],
)
def test_malformed_urls_are_refused(url: str, says: str) -> None:
    assert says in refused(url)


async def test_a_name_resolving_to_loopback_is_refused_unless_allowed() -> None:
    assert "127.0.0.1" in await refused_on_resolving("https://localhost/x")
    await check_resolves("http://localhost:9000/x", ("localhost",))


@pytest.mark.parametrize(
    "host", ["a..b", "x" * 300, "nothing-here.invalid", "ex\u00e4mple.invalid"]
)
async def test_names_that_do_not_resolve_are_refused_not_an_error(host: str) -> None:
    assert "does not resolve" in await refused_on_resolving(f"https://{host}/x")


async def test_a_public_literal_address_needs_no_resolving() -> None:
    await check_resolves("https://93.184.215.14/hook", ())
