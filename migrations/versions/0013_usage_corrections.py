"""usage corrections: a correction record cancels a usage record (meter event adjustments)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 16:00:00

``usage_records.cancels_id``: the usage record a correction record voids (one correction per
record); voided records and their corrections drop out of our invoices, and Stripe gets a meter
event adjustment for a voided record it had counted.

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancels_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_usage_records_cancels_id', ['cancels_id'])
        batch_op.create_foreign_key(batch_op.f('fk_usage_records_cancels_id_usage_records'), 'usage_records',
                                    ['cancels_id'], ['id'])


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_usage_records_cancels_id_usage_records'), type_='foreignkey')
        batch_op.drop_constraint('uq_usage_records_cancels_id', type_='unique')
        batch_op.drop_column('cancels_id')
