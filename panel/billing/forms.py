"""The customer's billing profile form on ``/billing`` (seed 002's ``org_billing_config``, the
customer's half): legal name, contact, address, country, VAT ID and the reminder e-mail switch.
The operator's switches (pay by invoice, which is a service's billing mode, and the monthly
auto-invoice) are not in it: a customer can neither turn them on nor off."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, StringField, SubmitField
from wtforms.validators import Length, Optional, ValidationError

from panel.auth.forms import ProfileForm, TaxIdRule

#: The ``panel.models.Profile`` columns the form edits (``reminder_emails`` besides).
BILLING_FIELDS = ("company", "full_name", "address_line1", "address_line2", "postal_code", "city", "region",
                  "country", "tax_id")


class BillingProfileForm(ProfileForm):
    """What goes on our invoices, edited by the customer (``POST /billing/profile``).

    ``company`` is the legal name printed as the buyer (a company's, or the person's full name);
    ``full_name`` the contact person. ``tax_id`` is validated with python-stdnum for the chosen
    country (a field-level error names the country); a VAT ID needs a country. ``reminder_emails``:
    whether payment reminders are e-mailed (they are recorded, and the dunning follows, either way).
    Lengths follow the ``profiles`` columns; the address fields are ``ProfileForm``'s.
    """

    phone = None  # contact details stay on /account/profile
    company = StringField(_l("Legal name"), validators=[Optional(), Length(max=200)],
                          description=_l("The company, or your full name, as it should appear on invoices."),
                          render_kw={"autocomplete": "organization"})
    full_name = StringField(_l("Contact person"), validators=[Optional(), Length(max=200)],
                            render_kw={"autocomplete": "name"})
    tax_id = StringField(_l("VAT ID"), validators=[Optional(), Length(max=40), TaxIdRule()],
                         description=_l("Checked for the country above, e.g. CHE-123.456.788 or DE136695976."))
    reminder_emails = BooleanField(_l("E-mail me payment reminders for overdue invoices"), default=True)
    submit = SubmitField(_l("Save billing profile"))

    def validate_tax_id(self, field):
        """A VAT ID is checked against its country's rules, so it needs the country."""
        if (field.data or "").strip() and not (self.country.data or "").strip():
            raise ValidationError(_l("Choose the country of this VAT ID."))
