"""Shared column helpers."""
from datetime import datetime, timezone

from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


def isoformat_utc(value: datetime | None) -> str | None:
    """ISO 8601 with an offset (``...+00:00``), or ``None``. SQLite returns naive datetimes for
    ``DateTime(timezone=True)`` columns; those are stored in UTC, so they are marked UTC here
    (OpenAPI ``date-time`` needs the offset)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


class AppendOnlyError(RuntimeError):
    """Raised when code tries to change or delete a row of an append-only table."""


def append_only(model, what: str) -> None:
    """Make the ORM refuse updates and deletes of ``model`` rows (``what``: "service events")."""
    from sqlalchemy import event

    def refuse(mapper, connection, target):
        raise AppendOnlyError(f"{what} are append-only")

    event.listen(model, "before_update", refuse)
    event.listen(model, "before_delete", refuse)
