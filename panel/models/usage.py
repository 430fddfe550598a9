"""Usage history: periodic samples of each live service's ``Backend.usage``, for charts."""
from sqlalchemy import DateTime, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import JSONType, isoformat_utc, utcnow


class UsageSample(db.Model):
    """One ``Usage`` reading of one service: ``metrics`` is ``[{"name", "value", "unit", "label",
    "limit"}]`` as ``Metric.to_json`` gives it; ``at`` is when it was collected (UTC)."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_samples_service_at", "service_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    at = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    metrics: Mapped[list] = mapped_column(JSONType, default=list)

    def to_json(self) -> dict:
        """``{"at": ISO 8601, "metrics": [...]}``."""
        return {"at": isoformat_utc(self.at), "metrics": self.metrics}
