"""ECR names and token renewal (registry/ecr.py), and the ECR settings of the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config.loading import load_config
from replicator.config.sites import credentials_of, settings_for
from replicator.errors import ConfigError
from replicator.registry.ecr import (
    MIN_TOKEN_REUSE,
    TOKEN_REFRESH_MARGIN,
    EcrCredentials,
    ecr_location,
    renewal_time,
)

HOUR = 3600.0


class TestEcrLocation:
    """Account and region read from an ECR registry host."""

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("111122223333.dkr.ecr.us-east-1.amazonaws.com", ("111122223333", "us-east-1")),
            ("111122223333.dkr.ecr.eu-north-1.amazonaws.com:443", ("111122223333", "eu-north-1")),
            ("111122223333.DKR.ECR.us-gov-west-1.amazonaws.com", ("111122223333", "us-gov-west-1")),
            ("111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn", ("111122223333", "cn-north-1")),
            ("111122223333.dkr.ecr-fips.us-east-1.amazonaws.com", ("111122223333", "us-east-1")),
            ("11112222333.dkr.ecr.us-east-1.amazonaws.com", None),
            ("111122223333.dkr.ecr.us-east-1.amazonaws.com.evil.example", None),
            ("public.ecr.aws", None),
            ("registry.example.com", None),
        ],
        ids=["plain", "port", "case", "china", "fips", "short", "suffix", "public", "other"],
    )  # fmt: skip
    def test_ecr_location(self, host: str, expected: tuple[str, str] | None) -> None:
        """Only `<12 digits>.dkr.ecr.<region>.amazonaws.com[.cn]` is an ECR registry host."""
        assert ecr_location(host) == expected


class TestRenewal:
    """When a token is fetched again."""

    @pytest.mark.parametrize(
        ("expires_in", "renew_in"),
        [
            (12 * HOUR, 12 * HOUR - TOKEN_REFRESH_MARGIN),
            (TOKEN_REFRESH_MARGIN + 2 * MIN_TOKEN_REUSE, 2 * MIN_TOKEN_REUSE),
            (TOKEN_REFRESH_MARGIN, MIN_TOKEN_REUSE),
            (-10 * 365 * 24 * HOUR, MIN_TOKEN_REUSE),
        ],
        ids=["twelve-hours", "near-margin", "inside-margin", "expired-on-arrival"],
    )
    def test_renewal_time(self, expires_in: float, renew_in: float) -> None:
        """TOKEN_REFRESH_MARGIN before expiry, but never sooner than MIN_TOKEN_REUSE."""
        now = 1_800_000_000.0
        assert renewal_time(now, now + expires_in) == now + renew_in


ECR_REGISTRY = """
version = 1
[registries.ecr]
url = "https://444455556666.dkr.ecr.eu-west-1.amazonaws.com"
auth = "ecr"
"""


class TestEcrConfig:
    """`auth = "ecr"` in the config."""

    def test_account_and_region_from_the_url(self, tmp_path: Path) -> None:
        """An ECR URL fills in account and region; the client gets ECR tokens and the API."""
        (tmp_path / "r.toml").write_text(ECR_REGISTRY)
        registry = load_config(tmp_path / "r.toml").registries["ecr"]
        assert (registry.account, registry.region) == ("444455556666", "eu-west-1")
        provider = credentials_of(registry)
        assert isinstance(provider, EcrCredentials)
        assert provider.source == "ECR GetAuthorizationToken for 444455556666 in eu-west-1"
        assert provider == credentials_of(registry)  # equal: a reload keeps the cached token
        assert settings_for(registry, 4).ecr is not None

    @pytest.mark.parametrize(
        ("extra", "field", "text"),
        [
            ('account = "111122223333"\n', "registries.ecr.url", "names ECR account 444455556666"),
            ('username = "AWS"\n', "registries.ecr.username", 'is set with auth = "ecr"'),
            ('ecr_endpoint = "ftp://x"\n', "registries.ecr.ecr_endpoint", "is not an http(s)://"),
        ],
        ids=["other-account", "username", "endpoint"],
    )
    def test_inconsistent_ecr_settings(
        self, tmp_path: Path, extra: str, field: str, text: str
    ) -> None:
        """Another account than the URL's, static credentials beside ECR tokens, or a bad
        endpoint are config errors naming the field."""
        (tmp_path / "r.toml").write_text(ECR_REGISTRY + extra)
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "r.toml")
        assert caught.value.field == field
        assert text in str(caught.value)

    def test_endpoint_without_ecr_auth_is_refused(self, tmp_path: Path) -> None:
        """ecr_endpoint means nothing without auth = "ecr": said, not ignored."""
        text = ECR_REGISTRY.replace('auth = "ecr"', 'ecr_endpoint = "http://127.0.0.1:5000"')
        (tmp_path / "r.toml").write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "r.toml")
        assert caught.value.field == "registries.ecr.ecr_endpoint"
