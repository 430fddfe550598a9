"""client area: the user's language and hostname DNS verifications

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 09:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("locale", sa.String(length=16), nullable=True))
    op.create_table(
        "domain_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_domain_verifications_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_verifications")),
        sa.UniqueConstraint("user_id", "hostname", name="uq_domain_verifications_user_id"),
    )
    with op.batch_alter_table("domain_verifications") as batch:
        batch.create_index(batch.f("ix_domain_verifications_user_id"), ["user_id"], unique=False)
        batch.create_index(batch.f("ix_domain_verifications_hostname"), ["hostname"], unique=False)


def downgrade():
    with op.batch_alter_table("domain_verifications") as batch:
        batch.drop_index(batch.f("ix_domain_verifications_hostname"))
        batch.drop_index(batch.f("ix_domain_verifications_user_id"))
    op.drop_table("domain_verifications")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locale")
