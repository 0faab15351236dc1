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
    looks_like_ecr,
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
            # dual-stack (IPv4 and IPv6): <registry-id>.dkr-ecr.<region>.on.aws (ECR user guide,
            # "Making requests to Amazon ECR registries")
            ("111122223333.dkr-ecr.us-east-1.on.aws", ("111122223333", "us-east-1")),
            ("111122223333.dkr-ecr-fips.us-gov-west-1.on.aws", ("111122223333", "us-gov-west-1")),
            ("111122223333.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
             ("111122223333", "cn-north-1")),
            # isolated and sovereign partitions (botocore's endpoints.json dnsSuffix of each)
            ("111122223333.dkr.ecr.us-iso-east-1.c2s.ic.gov", ("111122223333", "us-iso-east-1")),
            ("111122223333.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
             ("111122223333", "us-isob-east-1")),
            ("111122223333.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
             ("111122223333", "eu-isoe-west-1")),
            ("111122223333.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
             ("111122223333", "us-isof-south-1")),
            ("111122223333.dkr.ecr.eusc-de-east-1.amazonaws.eu",
             ("111122223333", "eusc-de-east-1")),
            ("11112222333.dkr.ecr.us-east-1.amazonaws.com", None),
            ("111122223333.dkr.ecr.us-east-1.amazonaws.com.evil.example", None),
            ("111122223333.dkr-ecr.us-east-1.on.aws.evil.example", None),
            ("public.ecr.aws", None),
            ("registry.example.com", None),
        ],
        ids=["plain", "port", "case", "china", "fips", "dualstack", "dualstack-fips",
             "dualstack-china", "iso", "iso-b", "iso-e", "iso-f", "eusc", "short", "suffix",
             "dualstack-suffix", "public", "other"],
    )  # fmt: skip
    def test_ecr_location(self, host: str, expected: tuple[str, str] | None) -> None:
        """`<12 digits>.dkr.ecr[-fips].<region>.<partition's suffix>` and the dual-stack
        `<12 digits>.dkr-ecr[-fips].<region>.on.aws` are ECR registry hosts, nothing else."""
        assert ecr_location(host) == expected

    @pytest.mark.parametrize(
        "host",
        ["1111222233.dkr.ecr.us-east-1.amazonaws.com", "dkr.ecr.us-east-1.amazonaws.com",
         "111122223333.dkr-ecr.us-east-1.on.example.aws",
         "111122223333.dkr.ecr.moon-1.amazonaws.com"],
        ids=["ten-digits", "no-account", "unknown-suffix", "bad-region"],
    )  # fmt: skip
    def test_lookalike_is_named_so(self, host: str) -> None:
        """A host that looks like ECR's (a `dkr.ecr`/`dkr-ecr` label) but is not one is told
        apart from any other host, so the config error can say so."""
        assert ecr_location(host) is None
        assert looks_like_ecr(host)
        assert not looks_like_ecr("registry.example.com")


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

    def test_dual_stack_url_names_account_and_region(self, tmp_path: Path) -> None:
        """A dual-stack ECR URL fills in account and region as the IPv4 one does."""
        text = ECR_REGISTRY.replace(
            "444455556666.dkr.ecr.eu-west-1.amazonaws.com", "444455556666.dkr-ecr.eu-west-1.on.aws"
        )
        (tmp_path / "r.toml").write_text(text)
        registry = load_config(tmp_path / "r.toml").registries["ecr"]
        assert (registry.account, registry.region) == ("444455556666", "eu-west-1")

    def test_unrecognised_ecr_lookalike_says_so(self, tmp_path: Path) -> None:
        """A URL that looks like ECR's but is not a host this version knows is an error saying
        so and naming account and region, not a bare 'field required'."""
        text = ECR_REGISTRY.replace("444455556666.dkr.ecr", "44445555666.dkr.ecr")
        (tmp_path / "r.toml").write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "r.toml")
        message = str(caught.value)
        assert "looks like an Amazon ECR registry" in message
        for word in ("registries.ecr", "account", "region"):
            assert word in message

    def test_endpoint_without_ecr_auth_is_refused(self, tmp_path: Path) -> None:
        """ecr_endpoint means nothing without auth = "ecr": said, not ignored."""
        text = ECR_REGISTRY.replace('auth = "ecr"', 'ecr_endpoint = "http://127.0.0.1:5000"')
        (tmp_path / "r.toml").write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(tmp_path / "r.toml")
        assert caught.value.field == "registries.ecr.ecr_endpoint"
