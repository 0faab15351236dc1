"""What a refused cross-repository mount makes of the blob's transfer.

The distribution spec says a registry that cannot mount SHOULD answer 202 with an upload session;
some answer an error instead (Pulp: `404 BLOB_UNKNOWN` when the `from` repository does not hold
the blob). Any refusal that is not about credentials and not temporary means only "not by a
mount": the blob goes up in a plain upload. A refused guess (a sibling repository tried for a
blob this process never saw there) stops the guessing at that registry, which would refuse the
next guess the same way; a refused mount from a repository this process saw holding the blob
makes it forget that repository (what the engine remembers is a hint, the registry's answer wins).
"""

from __future__ import annotations

from enum import StrEnum


class MountRefused(StrEnum):
    """What to do after a mount request failed."""

    RAISE = "raise"  # credentials, or a temporary error: the error stands (retried as any other)
    UPLOAD_STOP_GUESSING = "upload_stop_guessing"  # plain upload; no more guesses at this registry
    UPLOAD_FORGET_HOLDER = "upload_forget_holder"  # plain upload; the repository does not hold it


def after_refused_mount(*, auth: bool, temporary: bool, guessed: bool) -> MountRefused:
    """The step after a mount answered an error: `auth` when credentials were refused (401/403),
    `temporary` when the registry means "try again", `guessed` when the `from` repository was a
    guess rather than where this process saw the blob."""
    if auth or temporary:
        return MountRefused.RAISE
    return MountRefused.UPLOAD_STOP_GUESSING if guessed else MountRefused.UPLOAD_FORGET_HOLDER
