"""Jinja templates, shipped in the wheel as the package ``panel.templates`` (see pyproject.toml)."""
