"""Database models, one module per aggregate. Import models from here."""
from panel.models.addons import AddonEvent, ServiceAddon
from panel.models.catalog import Addon, Plan
from panel.models.events import ServiceEvent
from panel.models.mail import OutboundMail
from panel.models.names import DomainVerification
from panel.models.idempotency import IdempotencyKey
from panel.models.invoices import CreditNote, Invoice, InvoiceCounter, InvoiceLine, InvoiceReminder, UsageRecord
from panel.models.services import Operation, Service, ServiceCount
from panel.models.settings import PluginSetting
from panel.models.usage import UsageSample
from panel.models.audit import AuditEntry
from panel.models.users import ApiToken, Profile, User, UserSession

__all__ = ["User", "ApiToken", "UserSession", "Profile", "AuditEntry", "Plan", "Service", "ServiceCount", "Operation",
           "ServiceEvent", "PluginSetting", "UsageSample", "DomainVerification", "IdempotencyKey", "Addon",
           "ServiceAddon", "AddonEvent", "Invoice", "InvoiceLine", "InvoiceCounter", "CreditNote", "UsageRecord",
           "InvoiceReminder", "OutboundMail"]
