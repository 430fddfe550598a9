"""Operator forms."""
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import SubmitField


class CatalogImportForm(FlaskForm):
    """Upload a catalog YAML file (``plans: [...]``) to upsert plans by slug."""

    catalog = FileField("Catalog file (YAML)", validators=[FileRequired(), FileAllowed(["yaml", "yml"], "Upload a .yaml file.")])
    submit = SubmitField("Import")
