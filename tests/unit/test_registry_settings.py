"""One record per registry from config to socket (registry/settings.py, config/sites.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config.loading import load_config
from replicator.config.sites import settings_for
from replicator.errors import ConfigError
from replicator.registry.bandwidth import Bandwidth
from replicator.registry.pool import ClientPool
from replicator.registry.retry import RetryPolicy
from replicator.registry.settings import RegistrySettings, Timeouts

MINIMAL = """
version = 1
[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "https://registry.example:5443"
"""


def _settings(tmp_path: Path, extra: str = "") -> RegistrySettings:
    path = tmp_path / "replicator.toml"
    path.write_text(MINIMAL + extra)
    return settings_for(load_config(path).registries["use1"], 6)


class TestFromConfig:
    """settings_for is the one place a [registries.<name>] table becomes the client's record."""

    @pytest.mark.parametrize(
        ("extra", "field", "value"),
        [
            ("", "host", "registry.example:5443"),
            ("", "scheme", "https"),
            ("", "max_in_flight", 6),
            ("", "timeouts", Timeouts()),
            ("", "retry", RetryPolicy()),
            ('proxy = "none"\n', "proxy", "none"),
            ("tls_verify = false\n", "verify", False),
            ("max_bandwidth = 1048576\n", "max_bandwidth", 1048576),
            ('token_realms = ["https://auth.example/token"]\n', "token_realms", ("https://auth.example/token",)),
            ("read_timeout = 600\n", "timeouts", Timeouts(read=600.0)),
        ],
        ids=[
            "host", "scheme", "slots", "timeouts", "retry", "proxy", "tls", "bandwidth", "realms",
            "read-timeout",
        ],
    )  # fmt: skip
    def test_each_setting_lands_in_the_record(
        self, tmp_path: Path, extra: str, field: str, value: object
    ) -> None:
        """Each per-registry setting of the config is a field of the one record."""
        assert getattr(_settings(tmp_path, extra), field) == value

    @pytest.mark.parametrize("value", ["0", "-1", "3601", '"slow"'])
    def test_unusable_read_timeout_is_a_config_error(self, tmp_path: Path, value: str) -> None:
        """A read timeout of zero, below, over an hour or not a number is refused at load,
        naming the field."""
        with pytest.raises(ConfigError) as caught:
            _settings(tmp_path, f"read_timeout = {value}\n")
        assert caught.value.field == "registries.use1.read_timeout"

    def test_copy_policy_is_not_in_the_record(self, tmp_path: Path) -> None:
        """allow_nondistributable_artifacts is the copy's policy (the destination Endpoint's),
        not how the registry is reached: the client's record has no such field."""
        settings = _settings(tmp_path, "allow_nondistributable_artifacts = true\n")
        assert not hasattr(settings, "foreign_layers")


class TestHandedWhole:
    """The pool hands the record to the client whole, not field by field."""

    async def test_client_keeps_the_record_it_was_built_from(self) -> None:
        """The client built from a record holds that very record and acts on its fields."""
        settings = RegistrySettings(host="127.0.0.1:1", max_bandwidth=4096)
        async with ClientPool() as pool:
            client = pool.client(settings)
        assert client.settings is settings
        assert isinstance(client.bandwidth, Bandwidth)
        assert client.scheme == "http"  # loopback: Docker's rule, as the record's scheme is None
