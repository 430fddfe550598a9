"""Customer forms. The order form is built from the backend's ``order_params_schema``."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, SubmitField
from wtforms.validators import Optional

from panel.backends import Field


class ActionForm(FlaskForm):
    """A button-only form (cancel, retry...): CSRF and nothing else."""

    submit = SubmitField("Confirm")


def order_form_class(schema: tuple[Field, ...]):
    """A ``FlaskForm`` subclass with one input per order param (values validated by the backend)."""

    class OrderForm(FlaskForm):
        submit = SubmitField("Order")

    for f in schema:
        kwargs = {"label": f.title + ("" if f.required else " (optional)"), "description": f.help,
                  "validators": [Optional()], "render_kw": {}}
        if f.type == "boolean":
            field = BooleanField(default=bool(f.default), **kwargs)
        elif f.type == "choice":
            field = SelectField(choices=[(str(c), str(c)) for c in f.choices],
                                default=str(f.default) if f.default is not None else None, **kwargs)
        else:
            if f.max_length:
                kwargs["render_kw"]["maxlength"] = f.max_length
            if f.type in ("integer", "number"):
                kwargs["render_kw"]["inputmode"] = "numeric"
            field = StringField(default=f.default, **kwargs)
        setattr(OrderForm, f"param_{f.name}", field)
    return OrderForm
