"""The exception tree. Every error knows whether it is temporary and carries a stable code.

    ReplicatorError                 code, temporary
    ├── UsageError                  bad command-line arguments (exit 2)
    ├── ConfigError                 a bad config file: names the file and the field (exit 2)
    ├── EventError                  a bus payload that cannot be accepted (dead letter)
    ├── InvalidReferenceError       an invalid image reference, repository name, tag or digest
    ├── ManifestError               a manifest that cannot be parsed, too large, or cyclic
    ├── RegistryError               a registry answered with an error (status, OCI codes)
    │   ├── AuthError               401/403 after authentication was attempted
    │   ├── NotFoundError           404 / MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN
    │   ├── TlsError                certificate not trusted, or client certificate refused
    │   ├── TransportError          connection failed, reset or timed out (always temporary)
    │   └── SlowTransferError       a source read below the floor rate, cut (always temporary)
    ├── DigestMismatch              bytes that do not hash to the digest they claim
    ├── PolicyDenied                a destination's registry policy refuses the principal
    ├── DeleteRefused               a delete of what the source still serves (forged or stale)
    ├── BusError                    the MQTT broker is unreachable or refused us (temporary)
    ├── JournalError                the journal cannot be read or written
    │   └── SchemaError             the journal's schema is newer than this program
    ├── TransitionError             an illegal job state transition: a bug, never retried
    └── ClaimLost                   a job's claim passed to another claimer: our write refused

Only `retryable()` decides whether to retry: it is the one retry predicate of the project.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base of every error replicator raises on purpose."""

    code: str = "INTERNAL_ERROR"
    temporary: bool = False

    def __init__(self, message: str, *, temporary: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if temporary is not None:
            self.temporary = temporary

    def __str__(self) -> str:
        return self.message


class UsageError(ReplicatorError):
    """Arguments that do not make a valid command."""

    code = "USAGE"


class ConfigError(ReplicatorError):
    """A config file that cannot be loaded; says which file and which field."""

    code = "CONFIG_INVALID"

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class EventError(ReplicatorError):
    """A bus payload that is rejected; `reason` is a stable snake_case word for metrics."""

    code = "EVENT_REJECTED"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class InvalidReferenceError(ReplicatorError):
    """An invalid image reference, repository name, tag or digest."""

    code = "INVALID_REFERENCE"


class ManifestError(ReplicatorError):
    """A manifest that cannot be parsed, exceeds a limit, or references itself."""

    code = "INVALID_MANIFEST"


class RegistryError(ReplicatorError):
    """A registry answered with an error status or could not be reached."""

    code = "REGISTRY_ERROR"
    # The registry's host[:port], filled in by the client that raised it (for the metrics).
    host: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_codes: tuple[str, ...] = (),
        temporary: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        if temporary is None:
            temporary = status is None or status in (408, 429) or status >= 500
        super().__init__(message, temporary=temporary)
        self.status = status
        self.error_codes = error_codes
        self.retry_after = retry_after


class AuthError(RegistryError):
    """Credentials were refused (401/403) or the token service failed."""

    code = "AUTH_FAILED"


class NotFoundError(RegistryError):
    """The repository, manifest or blob does not exist."""

    code = "NOT_FOUND"


class TlsError(RegistryError):
    """The registry's certificate failed verification, or it refused our (missing) client
    certificate; permanent: only a config change (ca_file, client_cert) fixes it."""

    code = "TLS_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, temporary=False)


class TransportError(RegistryError):
    """The connection failed, was reset, or timed out; always temporary."""

    code = "TRANSPORT_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, temporary=True)


class SlowTransferError(RegistryError):
    """A source blob read brought less than the floor rate and was cut; always temporary. Not
    a TransportError: a read resumed after a broken link must not resume after this cut (the
    job waits, giving its destination slot back, and tries again)."""

    code = "TRANSFER_TOO_SLOW"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, temporary=True)


class DigestMismatch(ReplicatorError):
    """Bytes received do not hash to the digest they were requested by; never retried."""

    code = "DIGEST_MISMATCH"


class PolicyDenied(ReplicatorError):
    """The destination's registry policy refuses the source account."""

    code = "POLICY_DENIED"


class DeleteRefused(ReplicatorError):
    """A delete event names what the source still serves: nothing is deleted (permanent)."""

    code = "DELETE_REFUSED"


class BusError(ReplicatorError):
    """The MQTT broker cannot be reached, refused a request, or dropped the connection."""

    code = "BUS_ERROR"
    temporary = True


class JournalError(ReplicatorError):
    """The journal cannot be read or written (disk full, locked, unreachable database)."""

    code = "JOURNAL_ERROR"
    temporary = True


class SchemaError(JournalError):
    """The journal was written by a newer replicator; refuse rather than corrupt it."""

    code = "JOURNAL_SCHEMA"
    temporary = False


class TransitionError(ReplicatorError):
    """A job state transition that the table does not allow: a bug in the caller."""

    code = "ILLEGAL_TRANSITION"


class ClaimLost(ReplicatorError):
    """A worker's write to a job it no longer holds: the job was re-queued (taken for an orphan)
    and maybe claimed again since, so the write is refused and the job left to its holder."""

    code = "CLAIM_LOST"


def retryable(exc: BaseException) -> bool:
    """The one retry predicate: retry our temporary errors, nothing else."""
    return isinstance(exc, ReplicatorError) and exc.temporary
