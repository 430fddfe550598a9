"""search indexes: services by remote id, users by email prefix on any collation

The operator's search (``panel.admin.routes.service_search``) collects the matching service ids
from one index per field before it orders them. The remote id had no index (each search read the
whole table), and ``users.email``'s unique index serves ``LIKE 'q%'`` only in a database whose
collation is C; ``varchar_pattern_ops`` serves it on any collation (a plain index on SQLite).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 16:00:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.create_index('ix_services_resource_id', ['resource_id'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index('ix_users_email_prefix', ['email'], unique=False,
                              postgresql_ops={'email': 'varchar_pattern_ops'})


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('ix_users_email_prefix')
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_index('ix_services_resource_id')
