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
    """The registry refused a request: with the credentials of `source`, or with none. A 401
    refuses who they are (a wrong user or password); a 403 what they may do."""
    if source is None:
        hint = f"refused: no credentials are configured for it: {GIVE_CREDENTIALS}"
    elif error.status == 401:
        hint = (
            f"refused the credentials of {source} (a wrong user or password, or expired): "
            "correct them there"
        )
    else:
        hint = (
            f"refused the credentials of {source}, which may not do this here: use credentials "
            "that may (push for a destination, pull for a source), or ask for that permission"
        )
    return AuthError(
        f"{error}: registry {registry} {hint}",
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


def basic_without_credentials(registry: str, problem: AuthError | None) -> AuthError:
    """The registry asks for Basic credentials and there are none (or their source failed)."""
    if problem is not None:
        return AuthError(
            f"registry {registry} requires credentials (Basic) and none could be read: {problem}",
            status=401,
            temporary=problem.temporary,
        )
    return AuthError(
        f"registry {registry} requires credentials (Basic) and none are configured for it: "
        f"{GIVE_CREDENTIALS}",
        status=401,
        temporary=False,
    )
