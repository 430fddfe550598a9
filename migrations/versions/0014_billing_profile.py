"""billing profile: the customer's reminder e-mail switch, the language of an invoice

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 16:00:00

``profiles.reminder_emails``: the customer's own switch for payment reminder e-mails (the reminder
is still recorded and the dunning still follows: only the e-mail is not sent). ``invoices.locale``:
the language an invoice was issued in (its line texts are stored in it; the PDF is rendered in it).

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminder_emails', sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locale', sa.String(length=16), server_default='en', nullable=False))


def downgrade():
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_column('locale')
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_column('reminder_emails')
