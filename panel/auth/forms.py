"""Account forms (Flask-WTF: CSRF on every form)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length


class LoginForm(FlaskForm):
    """Email and password (CSRF by Flask-WTF)."""
    email = EmailField("Email", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[DataRequired()])
    submit = SubmitField("Log in")


class SignupForm(FlaskForm):
    """Email, password (8+ characters) and its confirmation."""
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200,
                             message="Use at least 8 characters.")])
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password",
                            message="The passwords do not match.")])
    submit = SubmitField("Create account")


class PasswordForm(FlaskForm):
    """Change the password: the current one, then the new one twice."""

    current = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=200,
                             message="Use at least 8 characters.")])
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), EqualTo("password",
                            message="The passwords do not match.")])
    submit = SubmitField("Change password")


class TokenForm(FlaskForm):
    """Create a personal API token with a label."""

    name = StringField("Label", validators=[DataRequired(), Length(max=100)])
    submit = SubmitField("Create token")
