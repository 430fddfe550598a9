"""Plugin settings stored in the database (secret ones encrypted with Fernet)."""
from sqlalchemy import DateTime, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from panel.extensions import db
from panel.models.base import utcnow


class PluginSetting(db.Model):
    """One setting of one plugin. ``value`` is JSON text, or a Fernet token when ``secret``."""

    __tablename__ = "plugin_settings"
    __table_args__ = (UniqueConstraint("plugin", "key", name="uq_plugin_settings_plugin_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plugin: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(Text)
    secret: Mapped[bool] = mapped_column(default=False)
    updated_at = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # never the value
        return f"<PluginSetting {self.plugin}.{self.key}{' (secret)' if self.secret else ''}>"
