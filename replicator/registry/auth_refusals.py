"""What an auth failure says: the registry, where the credentials came from (or that there
were none), and the flag or config key that fixes it. One wording for `copy` and the daemon:
both spellings are named, as the authenticator does not know which of them runs it."""

from __future__ import annotations

from replicator.errors import AuthError

# Where credentials are given, in copy's flags and in the config.
GIVE_CREDENTIALS = (
    "give them with copy's --src-creds/--dest-creds or --authfile (or `docker login`), or "
    "username and password_file (or docker_config) of registries.<name> in the config"
)


def refused(error: AuthError, registry: str, source: str | None) -> AuthError:
    """The registry refused a request: with the credentials of `source`, or with none."""
    if source is None:
        hint = f"no credentials are configured for it: {GIVE_CREDENTIALS}"
    else:
        hint = f"with the credentials of {source}: check that they may do this here"
    return AuthError(
        f"{error}: registry {registry} refused, {hint}",
        status=error.status,
        error_codes=error.error_codes,
        temporary=error.temporary,
    )


def wrong_credentials(error: AuthError, registry: str, source: str) -> AuthError:
    """The token service refused the credentials of `source` (asked again, still refused)."""
    return AuthError(
        f"registry {registry}: {error}, the credentials of {source}: correct them there",
        status=error.status,
        temporary=False,
    )


def withheld(error: AuthError, registry: str, realm: str, source: str) -> AuthError:
    """A token realm on another host, asked anonymously, gave no access: the credentials of
    `source` were kept from it; naming the realm sends them."""
    return AuthError(
        f"registry {registry}: {error}; its token realm {realm} is not on the registry's "
        f"host, so it was asked without the credentials of {source}; to send them there, name "
        f"the realm: copy --src-token-realm/--dest-token-realm {realm}, or "
        "registries.<name>.token_realms in the config",
        status=error.status,
        temporary=False,
    )
