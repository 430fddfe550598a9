"""Alembic migrations, shipped in the wheel as the package ``panel.migrations`` (see pyproject.toml)."""
