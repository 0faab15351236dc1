"""A registry marked insecure (`--src-tls-verify=false`, `--dest-tls-verify=false`, as skopeo
spells them) that is not on loopback: HTTPS without checking the certificate when it answers
TLS, else plain HTTP, as containers/image does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.copy_cli import assert_tags_equal, run_copy
from tests.support.images import LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.registry_server import Registry
from tests.support.tls import TlsRegistry, loopback_alias, make_pki

pytestmark = pytest.mark.integration

KIB = 1024


@pytest.fixture
def alias() -> str:
    """A name of this machine resolving to 127.0.0.1 that is not treated as loopback."""
    name = loopback_alias()
    if name is None:
        pytest.skip("no host name other than localhost resolves to 127.0.0.1 here")
    return name


def _image(tmp_path: Path, registry_url: str) -> str:
    layout = OCILayout(tmp_path)
    built = layout.image("v1", [LayerSpec(97, 8 * KIB)], label="insecure")
    push_over_http(tmp_path, "v1", registry_url, "app")
    return built.digest


class TestInsecureRegistry:
    """copy from and to registries reached by a non-loopback name."""

    def test_plain_http_registry_needs_tls_verify_false(
        self,
        alias: str,
        src_registry: Registry,
        dst_registry: Registry,
        tmp_path: Path,
    ) -> None:
        """By default a non-loopback name is reached over HTTPS and a plain-HTTP registry
        fails; with --src-tls-verify=false and --dest-tls-verify=false both are found to speak
        plain HTTP and the copy succeeds."""
        digest = _image(tmp_path, src_registry.url)
        source = f"{alias}:{src_registry.port}/app:v1"
        target = f"{alias}:{dst_registry.port}/app:v1"
        refused = run_copy(source, target)
        assert refused.exit_code == 1, str(refused)
        run = run_copy(source, target, "--src-tls-verify=false", "--dest-tls-verify=false")
        assert run.exit_code == 0, str(run)
        assert_tags_equal(f"{dst_registry.host}/app", {"v1": digest})

    def test_tls_registry_stays_on_https_unverified(
        self,
        alias: str,
        src_registry: Registry,
        dst_registry: Registry,
        tmp_path: Path,
    ) -> None:
        """A registry that answers TLS with a certificate no CA vouches for is used over HTTPS
        without verification, never downgraded to plain HTTP."""
        digest = _image(tmp_path / "layout", src_registry.url)
        tls = TlsRegistry(make_pki(tmp_path / "pki"))
        try:
            seed = run_copy(
                f"{src_registry.host}/app:v1", f"{tls.host}/app:v1",
                "--dest-ca-file", str(tls.pki.ca_file),
            )  # fmt: skip
            assert seed.exit_code == 0, str(seed)
            run = run_copy(
                f"{alias}:{tls.port}/app:v1", f"{dst_registry.host}/app:v1",
                "--src-tls-verify=false",
            )  # fmt: skip
            assert run.exit_code == 0, str(run)
            assert_tags_equal(f"{dst_registry.host}/app", {"v1": digest})
        finally:
            tls.cleanup()


class TestCertDir:
    def test_dest_cert_dir_trusts_its_ca(
        self, src_registry: Registry, dst_registry: Registry, tmp_path: Path
    ) -> None:
        """skopeo's --dest-cert-dir: the registry's CA as `ca.crt` in a folder is trusted."""
        _image(tmp_path / "layout", src_registry.url)
        tls = TlsRegistry(make_pki(tmp_path / "pki"))
        certs = tmp_path / "certs.d"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(tls.pki.ca_file.read_bytes())
        try:
            refused = run_copy(f"{src_registry.host}/app:v1", f"{tls.host}/app:v1")
            assert refused.exit_code == 1, str(refused)
            run = run_copy(
                f"{src_registry.host}/app:v1", f"{tls.host}/app:v1", "--dest-cert-dir", str(certs)
            )
            assert run.exit_code == 0, str(run)
            assert run.summary["images"] == 1
        finally:
            tls.cleanup()
