"""Shared column helpers."""
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

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


class DurableWork:
    """Columns of a durable work item (an ``Operation`` or a ``StripeEvent``): the database, not
    the job queue, decides what is owed and who runs it (``panel.work``).

    * ``due_at``: when the item should run next (aware UTC); ``None`` means nothing is owed (done,
      given up, or waiting behind another item).
    * ``lease_owner`` / ``lease_expires_at``: the worker running it now, and until when its lease
      holds (renewed by a heartbeat while the work runs); an expired lease may be taken over.
    * ``lease_token``: the fencing token, bumped on every claim; a completion whose token is no
      longer the row's is refused.
    * ``lost_runs``: claims whose run ended without reporting (killed worker, lost database);
      these never count as attempts.
    """

    due_at = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at = mapped_column(DateTime(timezone=True), nullable=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lost_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
