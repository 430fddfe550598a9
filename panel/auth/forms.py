"""Account forms (Flask-WTF: CSRF on every form)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from panel.models.users import MIN_PASSWORD_LENGTH


def new_password_fields(label: str):
    """``(password, confirm)`` fields for a new password under the one password rule."""
    password = PasswordField(label, validators=[DataRequired(), Length(
        min=MIN_PASSWORD_LENGTH, max=200, message=f"Use at least {MIN_PASSWORD_LENGTH} characters.")])
    confirm = PasswordField(f"Repeat {label[0].lower()}{label[1:]}", validators=[
        DataRequired(), EqualTo("password", message="The passwords do not match.")])
    return password, confirm


class LoginForm(FlaskForm):
    """Email and password (CSRF by Flask-WTF)."""
    email = EmailField("Email", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[DataRequired()])
    submit = SubmitField("Log in")


class SignupForm(FlaskForm):
    """Email, password (8+ characters) and its confirmation."""
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    password, confirm = new_password_fields("Password")
    submit = SubmitField("Create account")


class PasswordForm(FlaskForm):
    """Change the password: the current one, then the new one twice."""

    current = PasswordField("Current password", validators=[DataRequired()])
    password, confirm = new_password_fields("New password")
    submit = SubmitField("Change password")


class TokenForm(FlaskForm):
    """Create a personal API token with a label."""

    name = StringField("Label", validators=[DataRequired(), Length(max=100)])
    submit = SubmitField("Create token")
