"""Customer forms. The order form is generated from the JSON Schema of the backend's ``OrderParams``."""
import json
from typing import Any, Mapping

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import Optional

from panel.backends import schema_fields


class ActionForm(FlaskForm):
    """A button-only form (cancel, retry...): CSRF and nothing else."""

    submit = SubmitField("Confirm")


def order_form_class(schema: Mapping[str, Any]):
    """A ``FlaskForm`` subclass with one input ``param_<name>`` per property of ``schema`` (the
    JSON Schema of the backend's ``OrderParams``): a checkbox for booleans, a select for an
    ``enum``, a number input (with ``min``/``max``) for numbers, a text area of JSON for objects and
    lists, a password input for secrets, a text input otherwise. Units join the label
    ("Disk size (GiB)"). The values are validated by the backend, not by the form.
    """

    class OrderForm(FlaskForm):
        submit = SubmitField("Order")

    for f in schema_fields(schema):
        optional = not f.required and f.type != "boolean"  # an unticked box is an answer too
        label = f.title + (f" ({f.unit})" if f.unit else "") + (" (optional)" if optional else "")
        kwargs = {"label": label, "description": f.description, "validators": [Optional()], "render_kw": {}}
        attrs = kwargs["render_kw"]
        if f.type == "boolean":
            field = BooleanField(default=bool(f.default), **kwargs)
        elif f.choices:
            field = SelectField(choices=[(str(c), str(c)) for c in f.choices],
                                default=str(f.default) if f.default is not None else None, **kwargs)
        elif f.type in ("object", "array"):
            field = TextAreaField(default=json.dumps(f.default) if f.default is not None else None, **kwargs)
        elif f.secret:
            field = PasswordField(**kwargs)
        else:
            attrs.update(text_input_attrs(f))
            field = StringField(default=f.default, **kwargs)
        setattr(OrderForm, f"param_{f.name}", field)
    return OrderForm


def text_input_attrs(f) -> dict:
    """HTML attributes of a text input for a ``SchemaField``: ``maxlength`` from ``maxLength``, and
    for numbers ``type="number"`` with ``step`` and the ``min``/``max`` of the JSON Schema."""
    attrs: dict = {}
    if f.schema.get("maxLength"):
        attrs["maxlength"] = f.schema["maxLength"]
    if f.type in ("integer", "number"):
        attrs.update(type="number", step="1" if f.type == "integer" else "any")
        for bound, attr in (("minimum", "min"), ("maximum", "max")):
            if f.schema.get(bound) is not None:
                attrs[attr] = f.schema[bound]
    return attrs
