"""Docker credential helpers for tests: real `docker-credential-<name>` executables on PATH.

The protocol is the contract (`get`, the server URL on stdin, JSON on stdout), so a small script
that speaks it is the real component. Each helper reads its secrets from `<name>.json` beside it
at every call (a test rotates a secret by rewriting the file) and appends every server URL it is
asked for to `<name>.calls`. A held helper (`hold()`) answers only once `release()` is called, as
a helper waiting on a locked keychain or a slow cloud API does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The message docker-credential-helpers print (ErrCredentialsNotFound) for an unknown server.
NOT_FOUND_MESSAGE = "credentials not found in native keychain"
# How often a held helper looks whether it was released: short beside any test's wait.
HELD_POLL = 0.01

_SCRIPT = """#!{python}
import json, sys, time
from pathlib import Path
here = Path(__file__).resolve().parent
name = {name!r}
server = sys.stdin.read().strip()
with open(here / (name + ".calls"), "a") as log:
    log.write(server + "\\n")
if sys.argv[1:] != ["get"]:
    print("only get is implemented", file=sys.stderr)
    sys.exit(2)
while (here / (name + ".held")).exists():
    time.sleep({poll})
spec = json.loads((here / (name + ".json")).read_text())
if spec.get("fail"):
    print(spec["fail"])
    sys.exit(1)
entry = spec["secrets"].get(server)
if entry is None:
    print({not_found!r})
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": entry[0], "Secret": entry[1]}}))
"""


class CredentialHelper:
    """One helper executable in `bin_dir` (put that folder first on PATH)."""

    def __init__(self, bin_dir: Path, name: str) -> None:
        self.bin_dir = bin_dir
        self.name = name
        self.path = bin_dir / f"docker-credential-{name}"
        self.path.write_text(
            _SCRIPT.format(
                python=sys.executable, name=name, not_found=NOT_FOUND_MESSAGE, poll=HELD_POLL
            )
        )
        self.path.chmod(0o755)
        self.set({})

    def set(self, secrets: dict[str, tuple[str, str]], *, fail: str | None = None) -> None:
        """What the helper answers from now on: server URL -> (Username, Secret), or a failure
        message printed with exit status 1 for every server."""
        spec = {"secrets": secrets, "fail": fail}
        (self.bin_dir / f"{self.name}.json").write_text(json.dumps(spec))

    def hold(self) -> None:
        """From now on the helper's calls wait (after logging their server URL) until
        `release()`."""
        (self.bin_dir / f"{self.name}.held").touch()

    def release(self) -> None:
        """Let the held calls answer, and the next ones at once."""
        (self.bin_dir / f"{self.name}.held").unlink(missing_ok=True)

    @property
    def calls(self) -> list[str]:
        """The server URLs asked for, in order."""
        log = self.bin_dir / f"{self.name}.calls"
        return log.read_text().splitlines() if log.exists() else []
