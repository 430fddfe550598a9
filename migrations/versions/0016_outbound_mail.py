"""outbound mail: every email is durable work (a row first, sent by a worker under a lease)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 16:20:00

Before, an email was an RQ job with no row behind it: an SMTP outage longer than a few seconds, a
lost Redis or a killed worker lost it. Now each one is an ``outbound_mail`` row (body encrypted,
cleared once sent) with the durable-work columns, retried along ``PANEL_MAIL_BACKOFF`` and shown to
operators on /admin/mail when given up.

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# revision identifiers, used by Alembic.
revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "outbound_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=True),
        sa.Column("service_id", sa.Integer(), nullable=True),
        sa.Column("recipients", JSONType, nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body_encrypted", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lost_runs", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], name=op.f("fk_outbound_mail_service_id_services")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_mail")),
    )
    with op.batch_alter_table("outbound_mail", schema=None) as batch_op:
        batch_op.create_index("ix_outbound_mail_state", ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbound_mail_service_id"), ["service_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbound_mail_due_at"), ["due_at"], unique=False)


def downgrade():
    with op.batch_alter_table("outbound_mail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_mail_due_at"))
        batch_op.drop_index(batch_op.f("ix_outbound_mail_service_id"))
        batch_op.drop_index("ix_outbound_mail_state")
    op.drop_table("outbound_mail")
