"""The JSON documents `--json` prints: versioned, snake_case, one indentation, errors too.

Every document is an object with `"schema": 1` and `"command"` first; a field is only ever
added within a schema version, never renamed or removed (that would be schema 2). The
README's "JSON output" section documents each command's fields. ECR's shape is kept where
`status` answers in it (camelCase, as `aws ecr describe-image-replication-status` prints).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

SCHEMA = 1
# Two spaces, as `aws` and `kubectl -o json` print: readable, and `jq` takes it as it is.
INDENT = 2


def document(command: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` under the schema version and the command's name."""
    return {"schema": SCHEMA, "command": command, **body}


def error_document(command: str, code: str, message: str) -> dict[str, Any]:
    """What a failed command prints on stdout with --json (its exit code is unchanged)."""
    return document(command, {"error": {"code": code, "message": message}})


def print_json(doc: dict[str, Any], out: TextIO | None = None) -> None:
    """Print one document, indented the same way by every command."""
    print(json.dumps(doc, indent=INDENT), file=out or sys.stdout)
