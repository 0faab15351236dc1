"""The daemon configuration: loading, resolving, validating, and `replicator config check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.cli import main
from replicator.config.loading import (
    DEFAULT_CHUNK_THRESHOLD,
    DEFAULT_JOURNAL_URL,
    ENV_VAR,
    SUPPORTED_VERSION,
    load_config,
)
from replicator.config.sites import settings_for
from replicator.domain.routing.rules import Destination
from replicator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "configs").glob("*.toml"))
BROKEN = ROOT / "tests" / "data" / "configs"

MINIMAL = """
version = 1
[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:5001"
"""


def _write(folder: Path, text: str, name: str = "replicator.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


class TestExamples:
    def test_examples_exist(self) -> None:
        """configs/ ships the five documented examples."""
        assert {p.stem for p in EXAMPLES} >= {
            "demo",
            "dr-three-regions",
            "cross-account",
            "tls-token-auth",
            "fleet-postgres",
        }

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
    def test_example_loads(self, path: Path) -> None:
        """Every example config loads, with every registry named and its files read."""
        config = load_config(path)
        assert config.path == path
        for name, registry in config.registries.items():
            assert registry.name == name
            if registry.replication_file:
                assert registry.replication.rules
            if registry.password_file:
                assert registry.password is not None

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
    def test_config_check_passes(self, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`replicator config check` prints ok and the registries for every example, exit 0."""
        assert main(["config", "check", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.startswith("ok\n")
        for name in load_config(path).registries:
            assert f"  {name} " in out

    def test_config_check_names_what_needs_a_restart(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`config check` says which settings a reload leaves as they were (text and JSON),
        the same list the daemon warns about on SIGHUP."""
        from replicator.config.reload import DAEMON_RESTART_KEYS as RESTART_KEYS

        path = str(ROOT / "configs" / "demo.toml")
        assert main(["config", "check", path]) == 0
        out = capsys.readouterr().out
        assert f"restart to change: {', '.join(RESTART_KEYS)}" in out
        assert {"journal.url", "mqtt", "http.listen"} <= set(RESTART_KEYS)
        assert main(["config", "check", path, "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["restart_required_for"] == list(RESTART_KEYS)

    def test_config_check_quiet(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`config check --quiet` (the units' ExecReload) prints nothing for a valid file."""
        assert main(["config", "check", "--quiet", str(ROOT / "configs" / "demo.toml")]) == 0
        assert capsys.readouterr().out == ""

    def test_demo_policy_answers(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The demo summary shows prod allowed and dev denied at the cross-account registry."""
        assert main(["config", "check", str(ROOT / "configs" / "demo.toml")]) == 0
        out = capsys.readouterr().out
        assert "-> usw2 (111122223333 us-west-2): same account, no policy needed" in out
        assert "prod/example: allowed: ecr:ReplicateImage, ecr:CreateRepository" in out
        assert (
            "dev/example: DENIED: registry 444455556666 policy allows no ecr:ReplicateImage "
            "for arn:aws:iam::111122223333:root on "
            "arn:aws:ecr:eu-west-1:444455556666:repository/dev/example"
        ) in out

    def test_config_check_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--json gives the same answers for machines; --config names the file."""
        assert main(["config", "check", "--json", "--config", str(ROOT / "configs/demo.toml")]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert [r["name"] for r in summary["registries"]] == ["use1", "usw2", "euw1"]
        euw1 = summary["rules"][0]["destinations"][1]
        assert euw1["cross_account"] is True
        verdicts = {(c["repository"], c["action"]): c["allowed"] for c in euw1["checks"]}
        assert verdicts[("prod/example", "ecr:ReplicateImage")] is True
        assert verdicts[("dev/example", "ecr:ReplicateImage")] is False

    def test_positional_file_wins(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The positional FILE wins over --config."""
        demo = str(ROOT / "configs" / "demo.toml")
        assert main(["config", "check", demo, "--config", str(BROKEN / "bad-region.toml")]) == 0
        assert "config " + demo in capsys.readouterr().out


class TestBrokenConfigs:
    @pytest.mark.parametrize(
        ("name", "field", "text"),
        [
            ("unknown-key", "registries.use1.acount", "unknown key"),
            ("account-13-digits", "registries.use1.account", "'1111222233334' is not an account"),
            ("bad-region", "registries.use1.region", "'us-east' is not a region"),
            ("version-2", "version", "2 is newer than this replicator supports (1)"),
            ("bad-syntax", None, "not valid TOML: Expected ']'"),
            (
                "unreadable-password",
                "registries.use1.password_file",
                "json/missing.password: No such file or directory",
            ),
            (
                "destination-no-registry",
                "registries.use1.replication: rules[0].destinations[1]",
                "registryId 999988887777 region eu-west-1 names no registry of this config "
                "(in " + str(BROKEN / "json" / "to-unknown.json") + ")",
            ),
            (
                "destination-is-source",
                "registries.use1.replication: rules[0].destinations[0]",
                "is the source registry use1 itself",
            ),
            ("bad-policy-json", "registries.use1.policy", "policy-not-json.json is not valid JSON"),
            (
                "policy-condition",
                "registries.use1.policy: Statement[0].Condition",
                "Condition is not supported",
            ),
            (
                "duplicate-location",
                "registries.copy",
                "has the same account and region as registries.use1",
            ),
        ],
        ids=[
            "unknown-key",
            "account-13-digits",
            "bad-region",
            "version-2",
            "bad-syntax",
            "unreadable-password",
            "destination-no-registry",
            "destination-is-source",
            "bad-policy-json",
            "policy-condition",
            "duplicate-location",
        ],
    )
    def test_message(
        self, name: str, field: str | None, text: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A broken config is refused with a message naming the file and field; check exits 2."""
        path = BROKEN / f"{name}.toml"
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.file == str(path)
        assert caught.value.field == field
        assert text in str(caught.value)
        where = f"{path}: {field}: " if field else f"{path}: "
        assert str(caught.value).startswith(where)
        assert main(["config", "check", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert str(caught.value) in captured.err

    def test_every_error_listed(self) -> None:
        """Several errors in one file are all reported at once, each with its field."""
        with pytest.raises(ConfigError) as caught:
            load_config(BROKEN / "several-errors.toml")
        assert str(caught.value).splitlines()[1:] == [
            "  mqtt.port: Input should be less than or equal to 65535",
            "  workers.concurrency: Input should be greater than or equal to 1",
            "  registries.use1.account: must be a string in quotes, not a number",
            "  registries.use1.url: 'http://127.0.0.1:5001/v2' has a path; "
            "give only http(s)://host[:port]",
        ]
        assert "4 errors" in str(caught.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config file that does not exist is named in the error."""
        with pytest.raises(ConfigError, match=r"cannot read the config file \(as given\): No such"):
            load_config(tmp_path / "absent.toml")


class TestLoad:
    def test_defaults(self, tmp_path: Path) -> None:
        """Every section but registries has documented defaults."""
        config = load_config(_write(tmp_path, MINIMAL))
        assert config.version == SUPPORTED_VERSION
        assert config.journal.url == DEFAULT_JOURNAL_URL
        assert config.journal.retention_days == 30
        assert (config.workers.max_attempts, config.workers.max_deaths) == (10, 20)
        assert (config.mqtt.host, config.mqtt.port, config.mqtt.client_id) == (
            "127.0.0.1",
            1883,
            "replicator-1",
        )
        assert config.mqtt.events_topic == "registry/+/events"
        assert config.mqtt.results_topic == "replicator/{registry}/replications"
        assert config.workers.chunk_threshold == DEFAULT_CHUNK_THRESHOLD
        assert (config.http.host, config.http.port) == ("127.0.0.1", 9478)
        assert config.bridge.listen == "127.0.0.1:9479"
        assert config.reconcile.interval == 900
        use1 = config.registries["use1"]
        assert use1.replication.rules == ()
        assert use1.policy is None
        assert use1.tls_verify is True

    @pytest.mark.parametrize(("days", "kept"), [("0", 0.0), ("7", 7.0), ("0.5", 0.5)])
    def test_retention_days(self, tmp_path: Path, days: str, kept: float) -> None:
        """[journal] retention_days takes whole or fractional days; 0 keeps for ever."""
        text = MINIMAL + f"[journal]\nretention_days = {days}\n"
        assert load_config(_write(tmp_path, text)).journal.retention_days == kept

    def test_negative_retention_refused(self, tmp_path: Path) -> None:
        """A negative retention is a config error naming the field."""
        text = MINIMAL + "[journal]\nretention_days = -1\n"
        with pytest.raises(ConfigError, match=r"journal\.retention_days"):
            load_config(_write(tmp_path, text))

    def test_env_var_names_default_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a path, $REPLICATOR_CONFIG names the file."""
        path = _write(tmp_path, MINIMAL)
        monkeypatch.setenv(ENV_VAR, str(path))
        assert load_config().path == path

    def test_relative_paths_and_env_vars(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Relative paths resolve against the config's folder; $VARS in paths are expanded."""
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "pw").write_text("s3cret\n")
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "rules.json").write_text(
            '{"rules": [{"destinations": [{"region": "us-west-2", "registryId": "111122223333"}]}]}'
        )
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
        text = MINIMAL + (
            'username = "u"\npassword_file = "$CREDENTIALS_DIRECTORY/pw"\n'
            'replication = "rules.json"\n'
            '[registries.usw2]\naccount = "111122223333"\nregion = "us-west-2"\n'
            'url = "http://127.0.0.1:5002"\n'
            '[journal]\nurl = "sqlite:///state/journal.db"\n'
        )
        config = load_config(_write(tmp_path / "conf", text))
        use1 = config.registries["use1"]
        assert use1.password is not None
        assert use1.password.get_secret_value() == "s3cret"
        assert use1.replication_file == tmp_path / "conf" / "rules.json"
        assert use1.replication.destinations == (Destination("us-west-2", "111122223333"),)
        assert config.journal.url == f"sqlite:///{tmp_path}/conf/state/journal.db"

    def test_unset_env_var(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A path naming an unset environment variable says which variable."""
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        text = MINIMAL + 'username = "u"\npassword_file = "$CREDENTIALS_DIRECTORY/pw"\n'
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, text))
        assert caught.value.field == "registries.use1.password_file"
        assert "environment variable CREDENTIALS_DIRECTORY" in str(caught.value)

    def test_password_never_shown(self, tmp_path: Path) -> None:
        """Passwords and tokens read from files appear in no repr or str of the config."""
        (tmp_path / "pw").write_text("hunter2-registry")
        (tmp_path / "mq").write_text("hunter2-mqtt")
        (tmp_path / "tok").write_text("hunter2-token")
        text = (
            (
                'version = 1\n[mqtt]\nusername = "m"\npassword_file = "mq"\n'
                '[bridge]\ntoken_file = "tok"\n'
            )
            + MINIMAL.replace("version = 1", "")
            + 'username = "u"\npassword_file = "pw"\n'
        )
        config = load_config(_write(tmp_path, text))
        assert config.mqtt.password is not None
        assert config.bridge.token is not None
        shown = repr(config) + str(config) + repr(config.registries) + repr(config.mqtt.password)
        assert "hunter2" not in shown

    def test_password_key_refused(self, tmp_path: Path) -> None:
        """A password written in the TOML itself is refused, and not echoed back."""
        text = MINIMAL + 'username = "u"\npassword = "hunter2"\n'
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, text))
        assert caught.value.field == "registries.use1.password"
        assert "hunter2" not in str(caught.value)

    def test_lookups(self) -> None:
        """Registries are found by location, rule destination and host (default port optional)."""
        config = load_config(ROOT / "configs" / "tls-token-auth.toml")
        corp = config.registries["corp"]
        assert config.registry_by_location("111122223333", "us-east-1") is corp
        assert config.registry_by_location("111122223333", "ap-south-1") is None
        assert config.registry_by_destination(corp.location) is corp
        assert config.registry_by_host("registry.corp.example.com:5443") is corp
        assert config.registry_by_host("registry.corp.example.com") is None
        fleet = load_config(ROOT / "configs" / "fleet-postgres.toml")
        use1 = fleet.registries["use1"]
        assert use1.host == "use1.registry.example.com"
        assert fleet.registry_by_host("USE1.registry.example.com:443") is use1

    @pytest.mark.parametrize(
        ("extra", "field", "text"),
        [
            (
                '[registries.Use1]\naccount = "444455556666"\nregion = "eu-west-1"\n'
                'url = "http://127.0.0.1:5009"',
                "registries.Use1",
                "'Use1' is not a registry name ([a-z0-9_-]+",
            ),
            ('[http]\nlisten = "9478"', "http.listen", "is not host:port"),
            ('[mqtt]\nshared_group = "a/b"', "mqtt.shared_group", "must not contain"),
            ("[workers]\nchunk_threshold = 1024", "workers.chunk_threshold", "greater than"),
            ('[journal]\nurl = "journal.db"', "journal.url", "is not a database URL"),
            ('[mqtt]\npassword_file = "x"', "mqtt.password_file", "is set without username"),
        ],
        ids=["name", "listen", "shared-group", "chunk-threshold", "journal-url", "mqtt-password"],
    )
    def test_section_errors(self, tmp_path: Path, extra: str, field: str, text: str) -> None:
        """Section fields are validated with messages naming the field."""
        (tmp_path / "x").write_text("pw")
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, MINIMAL + extra + "\n"))
        assert text in str(caught.value)
        assert caught.value.field == field

    @pytest.mark.parametrize(
        ("url", "text"),
        [
            ("ftp://host", "is not http(s)://host[:port]"),
            ("https://user:pw@host", "credentials do not belong in the url"),
            ("https://host:99999", "has an invalid port"),
            ("https://host/v2/", "has a path"),
        ],
        ids=["scheme", "credentials", "port", "path"],
    )
    def test_url_errors(self, tmp_path: Path, url: str, text: str) -> None:
        """A registry url must be http(s)://host[:port] and nothing else."""
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, MINIMAL.replace("http://127.0.0.1:5001", url)))
        assert caught.value.field == "registries.use1.url"
        assert text in str(caught.value)
        assert ":pw@" not in str(caught.value)


class TestRegistryReach:
    """Per-registry reach settings: proxy, token realms."""

    def test_proxy_reaches_the_client_settings(self, tmp_path: Path) -> None:
        """`proxy` goes through to the client settings; "none" is kept as the word that means
        direct."""
        extra = 'proxy = "http://proxy.corp:3128"\n'
        config = load_config(_write(tmp_path, MINIMAL + extra))
        settings = settings_for(config.registries["use1"], 4)
        assert settings.proxy == "http://proxy.corp:3128"
        direct = load_config(_write(tmp_path, MINIMAL + 'proxy = "None"\n'))
        assert settings_for(direct.registries["use1"], 4).proxy == "none"

    @pytest.mark.parametrize("value", ["https://proxy:443", "socks5://proxy", "http://"])
    def test_unusable_proxy_is_a_config_error(self, tmp_path: Path, value: str) -> None:
        """A proxy URL we cannot use is refused at load, naming the field."""
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, MINIMAL + f'proxy = "{value}"\n'))
        assert caught.value.field == "registries.use1.proxy"

    def test_token_realms_reach_the_client_settings(self, tmp_path: Path) -> None:
        """`token_realms` (realms on other hosts trusted with the credentials) reach the client."""
        extra = 'token_realms = ["https://auth.example.com/token"]\n'
        config = load_config(_write(tmp_path, MINIMAL + extra))
        settings = settings_for(config.registries["use1"], 4)
        assert settings.token_realms == ("https://auth.example.com/token",)

    @pytest.mark.parametrize("value", ["auth.example.com", "ftp://a", "https://u:p@a/token"])
    def test_unusable_token_realm_is_a_config_error(self, tmp_path: Path, value: str) -> None:
        """A token realm that is no http(s) URL, or carries credentials, is refused at load."""
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, MINIMAL + f'token_realms = ["{value}"]\n'))
        assert (caught.value.field or "").startswith("registries.use1.token_realms")

    def test_repositories_list_is_validated(self, tmp_path: Path) -> None:
        """`repositories` holds OCI names; one with a `..` segment is refused, naming it."""
        good = load_config(_write(tmp_path, MINIMAL + 'repositories = ["team/a", "b"]\n'))
        assert good.registries["use1"].repositories == ["team/a", "b"]
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, MINIMAL + 'repositories = ["team/../x"]\n'))
        assert "team/../x" in str(caught.value)
        assert (caught.value.field or "").startswith("registries.use1.repositories")

    def test_config_check_shows_proxy_and_named_repositories(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`config check` says which registries go through which proxy (host:port, never the
        proxy's password) and which are scanned from a named list instead of the catalog."""
        extra = 'proxy = "http://u:s3cret@proxy.corp:3128"\nrepositories = ["team/a"]\n'
        path = _write(tmp_path, MINIMAL + extra)
        assert main(["config", "check", str(path)]) == 0
        out = capsys.readouterr().out
        assert "proxy: proxy.corp:3128" in out
        assert "repositories: 1 named, catalog not read" in out
        assert "s3cret" not in out


ACTIVE_ACTIVE = """
version = 1
[registries.east]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:5001"
replication = "east.json"
[registries.west]
account = "111122223333"
region = "us-west-2"
url = "http://127.0.0.1:5002"
replication = "west.json"
"""


def _to(region: str) -> str:
    return json.dumps({"rules": [{"destinations": [
        {"region": region, "registryId": "111122223333"}]}]})  # fmt: skip


class TestConfigCheckCycles:
    def test_active_active_pair_is_described(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A -> B and B -> A rules: `config check` names the cycle and what the daemon does
        with it (echoes make no job back), in text and in JSON."""
        (tmp_path / "east.json").write_text(_to("us-west-2"))
        (tmp_path / "west.json").write_text(_to("us-east-1"))
        path = _write(tmp_path, ACTIVE_ACTIVE)
        assert main(["config", "check", str(path)]) == 0
        out = capsys.readouterr().out
        assert "\ncycles\n  east -> west -> east: each push goes around once" in out
        assert "echo" in out
        assert main(["config", "check", "--json", str(path)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert [c["registries"] for c in summary["cycles"]] == [["east", "west"]]

    def test_one_way_has_no_cycle(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A one-way rule makes no cycle section."""
        (tmp_path / "east.json").write_text(_to("us-west-2"))
        (tmp_path / "west.json").write_text(json.dumps({"rules": []}))
        assert main(["config", "check", str(_write(tmp_path, ACTIVE_ACTIVE))]) == 0
        assert "cycles" not in capsys.readouterr().out
