"""Shared column helpers."""
from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


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
