"""The tamper-evident audit log: an append-only hash chain of every register, alias move, archive and gc.

Row ``i`` carries ``row_hash = sha256(prev_hash + canonical JSON of {id, created_at, event, name, actor,
payload})`` with ``prev_hash`` the row ``i-1``'s ``row_hash`` (64 zeros for the first row), like a Git commit
chain or Certificate Transparency's log (RFC 6962, without the Merkle tree: the registry reads it whole).
Ids are allocated by the writer (max + 1 under the registry's write lock), so they have no gaps: a deleted
row shows as a gap or a broken link, an edited row as a hash that no longer matches. An attacker who drops
the triggers and rewrites every row after the one they changed keeps the chain consistent; the head hash
that :func:`verify_chain` returns is what to record elsewhere (a ticket, a release note) to catch that too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from assay.registry.artifacts import canonical_json
from assay.registry.schema import audit_log

__all__ = ["GENESIS", "AuditRow", "append", "now", "row_hash", "verify_chain"]

GENESIS = "0" * 64


def now() -> str:
    """The current UTC time as ISO 8601 text with microseconds (``2026-01-02T03:04:05.123456Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(prev_hash: str, row: Mapping[Any, Any]) -> str:
    """sha256(prev_hash + canonical JSON of the row's content)."""
    content = {key: row[key] for key in ("id", "created_at", "event", "name", "actor", "payload")}
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(content)).hexdigest()


AuditRow = dict[str, Any]


def append(conn: Connection, event: str, name: str | None, actor: str, payload: Mapping[Any, Any],
           *, created_at: str | None = None) -> AuditRow:
    """Append one row (the caller holds the registry's write lock, inside its transaction); returns it."""
    last = conn.execute(sa.select(audit_log.c.id, audit_log.c.row_hash)
                        .order_by(audit_log.c.id.desc()).limit(1)).first()
    row: AuditRow = {"id": 1 if last is None else int(last.id) + 1, "created_at": created_at or now(),
                     "event": event, "name": name, "actor": actor,
                     "payload": canonical_json(dict(payload)).decode("utf-8")}
    row["prev_hash"] = GENESIS if last is None else str(last.row_hash)
    row["row_hash"] = row_hash(row["prev_hash"], row)
    conn.execute(audit_log.insert().values(**row))
    return row


def payload(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The row's payload as a dict ({} when it is not a JSON object: verify reports that row)."""
    try:
        value = json.loads(row["payload"])
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def verify_chain(rows: Iterable[Mapping[Any, Any]]) -> tuple[list[str], str, int]:
    """(problems, head hash, rows checked) for audit rows in id order. Each problem names the row by id."""
    problems: list[str] = []
    prev_hash, prev_id, count = GENESIS, 0, 0
    for row in rows:
        count += 1
        rid = int(row["id"])
        if rid != prev_id + 1:
            missing = f"row {prev_id + 1}" if rid == prev_id + 2 else f"rows {prev_id + 1}-{rid - 1}"
            problems.append(f"audit log: {missing} missing (deleted) before row {rid}" if rid > prev_id + 1
                            else f"audit log: row {rid} is out of order after row {prev_id}")
        if row["prev_hash"] != prev_hash:
            problems.append(f"audit log: row {rid} does not follow row {prev_id} (its prev_hash is "
                            f"{str(row['prev_hash'])[:12]}..., row {prev_id} hashes to {prev_hash[:12]}...): a row "
                            "before it was changed, removed or inserted")
        expected = row_hash(str(row["prev_hash"]), row)
        if row["row_hash"] != expected:
            problems.append(f"audit log: row {rid} ({row['event']} {row['name'] or ''}) was changed: its content "
                            f"hashes to {expected[:12]}..., not the recorded {str(row['row_hash'])[:12]}...")
        prev_hash, prev_id = str(row["row_hash"]), rid
    return problems, prev_hash, count
