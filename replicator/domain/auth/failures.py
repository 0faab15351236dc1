"""Token failures remembered per (realm, scope), each until its backoff is over.

A token service that cannot be reached, refuses, or answers something that is not a token is
asked again for that scope only after a wait that doubles with each failure in a row, from
FIRST_RETRY_SECONDS up to LONGEST_RETRY_SECONDS; a success forgets them. The key is the realm
*and* the scope: the realm one repository's 401 names (dead, lying or briefly broken) never
blocks another repository, nor the same realm for another scope. Time is given by the caller
(monotonic seconds), so the rules are tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# A token service that blipped (a restart, a deploy) is usually back within a second.
FIRST_RETRY_SECONDS = 1.0
# Never longer than the jobs' own longest Retry-After wait: a fixed realm is used within a minute.
LONGEST_RETRY_SECONDS = 60.0
# A failure this long after the last one's wait ended starts the doubling again from the first
# wait: failures in a row are one outage, failures hours apart are not.
FORGET_AFTER_SECONDS = 10 * 60.0
# Scopes are per repository: a daemon serving many repositories keeps at most this many failures
# (the oldest dropped first), so a realm failing for every repository costs bounded memory.
MAX_REMEMBERED = 10_000

Key = tuple[str, str]  # (realm, scope)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a realm failed a scope, how many times in a row, and until when it is not asked."""

    reason: str
    temporary: bool
    in_a_row: int
    until: float


def retry_wait(in_a_row: int) -> float:
    """Seconds before a realm that failed `in_a_row` times in a row is asked again."""
    return min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** max(0, in_a_row - 1))


class AuthFailures:
    """The token failures of one registry, by (realm, scope)."""

    def __init__(self) -> None:
        self._failed: dict[Key, Failure] = {}

    def blocked(self, realm: str, scope: str, now: float) -> Failure | None:
        """The failure that keeps `realm` from being asked for `scope` now, if any."""
        failure = self._failed.get((realm, scope))
        return failure if failure is not None and now < failure.until else None

    def failed(
        self, realm: str, scope: str, *, reason: str, temporary: bool, now: float
    ) -> Failure:
        """Record that `realm` failed `scope` now; the failure, with the wait it imposes."""
        key = (realm, scope)
        previous = self._failed.pop(key, None)
        in_a_row = 1
        if previous is not None and now - previous.until < FORGET_AFTER_SECONDS:
            in_a_row = previous.in_a_row + 1
        failure = Failure(reason, temporary, in_a_row, now + retry_wait(in_a_row))
        self._failed[key] = failure
        while len(self._failed) > MAX_REMEMBERED:
            del self._failed[next(iter(self._failed))]
        return failure

    def succeeded(self, realm: str, scope: str) -> None:
        """`realm` gave a token for `scope`: its failures are forgotten."""
        self._failed.pop((realm, scope), None)

    def clear(self) -> None:
        """Forget every failure (the credentials changed)."""
        self._failed.clear()
