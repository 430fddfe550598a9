"""Operator forms."""
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import SubmitField


class CatalogImportForm(FlaskForm):
    """Upload a catalog YAML file (``plans: [...]``) to upsert plans by slug."""

    catalog = FileField("Catalog file (YAML)", validators=[FileRequired(), FileAllowed(["yaml", "yml"], "Upload a .yaml file.")])
    submit = SubmitField("Import")


# --------------------------------------------------------------------------- plugin settings

#: The field name prefix of settings inputs (``set_<setting>``) and of "clear this secret" boxes.
SETTING_PREFIX = "set_"
CLEAR_PREFIX = "clear_"


def settings_form_class(fields, values: dict, source: dict):
    """A ``FlaskForm`` class for a backend's settings (``SchemaField``s of its ``Settings``): one
    input ``set_<name>`` per setting, typed from its JSON Schema (checkbox for booleans, select for
    choices, number input with min/max, text area of JSON for objects and lists, password input for
    secrets). Current values are filled in, except secrets: a secret input is always empty
    (write-only: WTForms' ``PasswordField`` never renders a value) with a ``clear_<name>`` box when
    one is stored. A setting from ``PANEL_PLUGIN_*`` (``source`` "env") is shown read-only. Values
    are validated by the backend's schema on submit, not by the form."""
    import json as _json

    from wtforms import BooleanField, PasswordField, SelectField, StringField, TextAreaField
    from wtforms.validators import Optional

    from panel.customer.forms import text_input_attrs

    class SettingsForm(FlaskForm):
        save = SubmitField("Save settings")

    for f in fields:
        optional = not f.required and f.default is None and f.type != "boolean"
        label = f.title + (f" ({f.unit})" if f.unit else "") + (" (optional)" if optional else "")
        value = values.get(f.name)
        attrs: dict = {}
        if source.get(f.name) == "env":
            attrs["disabled"] = True
        kwargs = {"label": label, "description": f.description, "validators": [Optional()], "render_kw": attrs}
        if f.secret:
            attrs["autocomplete"] = "new-password"
            attrs["placeholder"] = ("stored (encrypted); type to replace" if value not in (None, "")
                                    else "not set")
            field = PasswordField(**kwargs)
            if source.get(f.name) == "db":
                setattr(SettingsForm, CLEAR_PREFIX + f.name, BooleanField(f"Remove the stored {f.title.lower()}"))
        elif f.type == "boolean":
            field = BooleanField(default=bool(value), **kwargs)
        elif f.choices:
            field = SelectField(choices=[(str(c), str(c)) for c in f.choices],
                                default=str(value) if value is not None else None, **kwargs)
        elif f.type in ("object", "array", ""):
            attrs["rows"] = 3
            field = TextAreaField(default=_json.dumps(value) if value is not None else None, **kwargs)
        else:
            attrs.update(text_input_attrs(f))
            field = StringField(default=None if value is None else str(value), **kwargs)
        setattr(SettingsForm, SETTING_PREFIX + f.name, field)
    return SettingsForm
