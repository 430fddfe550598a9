"""Account forms (Flask-WTF: CSRF on every form)."""
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from panel.models.users import MIN_PASSWORD_LENGTH, InvalidEmail, validate_email


class EmailRule:
    """WTForms validator for the one email rule (``panel.models.users.validate_email``); stores the
    normalised address in ``field.data``."""

    def __call__(self, form, field):
        try:
            field.data = validate_email(field.data or "")
        except InvalidEmail as exc:
            raise ValidationError(str(exc)) from None


def email_field(label: str = "Email"):
    """An email field under the one email rule."""
    return EmailField(label, validators=[DataRequired(message="Enter your email address."), Length(max=254),
                                         EmailRule()], render_kw={"autocomplete": "email"})


def new_password_fields(label: str):
    """``(password, confirm)`` fields for a new password under the one password rule."""
    password = PasswordField(label, validators=[DataRequired(), Length(
        min=MIN_PASSWORD_LENGTH, max=200, message=f"Use at least {MIN_PASSWORD_LENGTH} characters.")],
        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(f"Repeat {label[0].lower()}{label[1:]}", validators=[
        DataRequired(), EqualTo("password", message="The passwords do not match.")],
        render_kw={"autocomplete": "new-password"})
    return password, confirm


def current_password_field(label: str = "Current password"):
    """A password field for re-entering the current password."""
    return PasswordField(label, validators=[DataRequired(message="Enter your password."), Length(max=200)],
                         render_kw={"autocomplete": "current-password"})


class LoginForm(FlaskForm):
    """Email and password (CSRF by Flask-WTF)."""
    email = email_field()
    password = current_password_field("Password")
    submit = SubmitField("Log in")


class TwoFactorForm(FlaskForm):
    """The second sign-in step: a 6-digit authenticator code or a recovery code."""
    code = StringField("Authentication code", validators=[DataRequired(message="Enter the code."), Length(max=32)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True})
    submit = SubmitField("Verify")


class SignupForm(FlaskForm):
    """Email, password (8+ characters) and its confirmation."""
    email = email_field()
    password, confirm = new_password_fields("Password")
    submit = SubmitField("Create account")


class PasswordForm(FlaskForm):
    """Change the password: the current one, then the new one twice."""

    current = current_password_field()
    password, confirm = new_password_fields("New password")
    submit = SubmitField("Change password")


class ForgotForm(FlaskForm):
    """Ask for a password-reset link."""
    email = email_field()
    submit = SubmitField("Send me a link")


class ResetForm(FlaskForm):
    """Choose a new password (from a reset link)."""
    password, confirm = new_password_fields("New password")
    submit = SubmitField("Set new password")


class EmailChangeForm(FlaskForm):
    """Change the email address: the new one and the current password; confirmed from the new
    address."""
    email = email_field("New email address")
    current = current_password_field()
    submit = SubmitField("Change email")


class TwoFactorSetupForm(FlaskForm):
    """Confirm the authenticator app by typing its current code."""
    code = StringField("Code from the app", validators=[DataRequired(message="Enter the code."), Length(max=16)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})
    submit = SubmitField("Turn on two-factor authentication")


class TwoFactorDisableForm(FlaskForm):
    """Turn 2FA off (or make new recovery codes): the password and a current code."""
    current = current_password_field("Password")
    code = StringField("Authentication code", validators=[DataRequired(message="Enter the code."), Length(max=32)],
                       render_kw={"autocomplete": "one-time-code"})
    submit = SubmitField("Turn off")


class TokenForm(FlaskForm):
    """Create a personal API token with a label."""

    name = StringField("Label", validators=[DataRequired(), Length(max=100)])
    submit = SubmitField("Create token")


def country_choices() -> list[tuple[str, str]]:
    """ISO 3166-1 alpha-2 codes and English names (pycountry), sorted by name, "" first."""
    import pycountry

    rows = sorted(((c.alpha_2, getattr(c, "common_name", None) or c.name) for c in pycountry.countries),
                  key=lambda row: row[1])
    return [("", "Choose…")] + rows


class TaxIdRule:
    """A tax ID must be valid for the chosen country where python-stdnum has that country's VAT
    rule (EU VAT numbers, Swiss UID/MWST, ...); other countries: stored as typed. An EU VAT number
    is stored with its country prefix (``DE136695976``, Greece ``EL``), as the reverse charge and
    the invoice need it."""

    def __call__(self, form, field):
        value = (field.data or "").strip()
        field.data = value
        country = (form.country.data or "").upper()
        if not value or not country:
            return
        from stdnum import get_cc_module
        from stdnum.exceptions import ValidationError as StdnumError

        module = get_cc_module(country.lower(), "vat")
        if module is None:
            return
        try:
            module.validate(value)
            field.data = module.format(value) if hasattr(module, "format") else module.compact(value)
            from panel.billing.invoicing import EU_COUNTRIES, eu_vat_prefix

            if country in EU_COUNTRIES and not field.data.upper().startswith(eu_vat_prefix(country)):
                field.data = eu_vat_prefix(country) + module.compact(value)  # EU form: DE136695976
        except StdnumError:
            from flask_babel import gettext

            example = "CHE-123.456.788" if country == "CH" else gettext("your VAT number")
            raise ValidationError(gettext("This is not a valid tax ID for %(country)s (for example %(example)s).",
                                          country=country, example=example)) from None


class ProfileForm(FlaskForm):
    """Name, company, contact details, billing address and tax ID (``panel.models.Profile``)."""

    full_name = StringField("Full name", validators=[Optional(), Length(max=200)], render_kw={"autocomplete": "name"})
    company = StringField("Company", validators=[Optional(), Length(max=200)], render_kw={"autocomplete": "organization"})
    phone = StringField("Phone", validators=[Optional(), Length(max=40)], render_kw={"autocomplete": "tel"})
    address_line1 = StringField(_l("Address"), validators=[Optional(), Length(max=200)],
                                render_kw={"autocomplete": "address-line1"})
    address_line2 = StringField(_l("Address (line 2)"), validators=[Optional(), Length(max=200)],
                                render_kw={"autocomplete": "address-line2"})
    postal_code = StringField(_l("Postal code"), validators=[Optional(), Length(max=20)],
                              render_kw={"autocomplete": "postal-code"})
    city = StringField(_l("City"), validators=[Optional(), Length(max=100)], render_kw={"autocomplete": "address-level2"})
    region = StringField(_l("State or canton"), validators=[Optional(), Length(max=100)],
                         render_kw={"autocomplete": "address-level1"})
    country = SelectField(_l("Country"), choices=[], validators=[Optional()], render_kw={"autocomplete": "country"})
    tax_id = StringField("Tax ID (VAT number)", validators=[Optional(), Length(max=40), TaxIdRule()])
    submit = SubmitField("Save profile")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.country.choices = country_choices()
