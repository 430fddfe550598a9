"""Count what reaches the database: SQL statements (cursor executes) and transaction ends.

``with recording(db.engine) as seen: ...`` then ``seen.statements`` (SQL text, in order),
``seen.commits`` and ``seen.rollbacks``. Listens on the engine, so every connection of the pool
counts (the request's, a heartbeat's); pool pings are statements too.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from sqlalchemy import event


@dataclass
class Seen:
    """What ``recording`` saw."""

    statements: list[str] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0

    @property
    def count(self) -> int:
        """SQL statements sent (cursor executes)."""
        return len(self.statements)

    def tables(self) -> list[str]:
        """The first table each statement names (``select ... from services`` -> ``services``)."""
        out = []
        for sql in self.statements:
            found = re.search(r"\b(?:from|into|update)\s+\"?(\w+)", sql, re.I)
            out.append(found.group(1) if found else sql.split()[0].lower())
        return out

    def summary(self) -> str:
        """One line per statement (first 120 characters), for assertion messages."""
        return "\n".join(" ".join(sql.split())[:120] for sql in self.statements)


@contextlib.contextmanager
def recording(engine):
    """Record the statements, commits and rollbacks on ``engine`` while the block runs."""
    seen = Seen()

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        seen.statements.append(statement)

    def on_commit(conn):
        seen.commits += 1

    def on_rollback(conn):
        seen.rollbacks += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "rollback", on_rollback)
