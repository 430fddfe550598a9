"""operator lists: service names and hostnames, counts per plan and status, indexes in list order

``services`` gets ``display_name`` and ``hostname`` (filled from the order params, the claimed
name and what the backend returned), searched by prefix (byte order on PostgreSQL, so plain
b-tree indexes serve ``LIKE 'q%'``). ``service_counts`` holds how many services each plan has in
each status (``panel.counts`` keeps it in the same transaction as each change), filled from the
services here. The list pages' indexes follow their order (``ORDER BY id DESC`` per status,
backend, both; operations per state); the old ``(status, backend)`` and ``(state, updated_at)``
indexes go.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-01 12:30:00

"""
import json

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SEARCH = sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql")
NAME_PARAMS = ("name", "server_name", "space", "tenant_name", "hostname", "username")


def _display_name(params: dict) -> str:
    for key in NAME_PARAMS:
        if params.get(key):
            return str(params[key])[:255]
    return ""


def _hostname(params: dict, claim_key, data: dict):
    for value in (data.get("hostname"), data.get("host"), params.get("hostname"), claim_key):
        if isinstance(value, str) and "." in value and "/" not in value and " " not in value:
            return value.strip().lower()[:255]
    return None


def _json(value) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def upgrade():
    op.create_table('service_counts',
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('n', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_service_counts_plan_id_plans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('plan_id', 'status', name=op.f('pk_service_counts'))
    )
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('display_name', SEARCH, server_default='', nullable=False))
        batch_op.add_column(sa.Column('hostname', SEARCH, nullable=True))
        batch_op.drop_index('ix_services_status_backend')
        batch_op.create_index('ix_services_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('ix_services_backend_id', ['backend', 'id'], unique=False)
        batch_op.create_index('ix_services_status_backend_id', ['status', 'backend', 'id'], unique=False)
        batch_op.create_index('ix_services_display_name', ['display_name'], unique=False)
        batch_op.create_index('ix_services_hostname', ['hostname'], unique=False)
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_index('ix_operations_state_updated')
        batch_op.create_index('ix_operations_state_id', ['state', 'id'], unique=False)

    conn = op.get_bind()
    services = sa.table('services', sa.column('id', sa.Integer), sa.column('params', sa.JSON),
                        sa.column('claim_key', sa.String), sa.column('backend_data', sa.JSON),
                        sa.column('display_name', sa.String), sa.column('hostname', sa.String))
    last = 0
    while True:  # in batches, so a large table is not read at once
        rows = conn.execute(sa.select(services.c.id, services.c.params, services.c.claim_key, services.c.backend_data)
                            .where(services.c.id > last).order_by(services.c.id).limit(2000)).all()
        if not rows:
            break
        updates = []
        for service_id, params, claim_key, data in rows:
            params, data = _json(params), _json(data)
            updates.append({"sid": service_id, "dn": _display_name(params), "hn": _hostname(params, claim_key, data)})
        conn.execute(services.update().where(services.c.id == sa.bindparam("sid"))
                     .values(display_name=sa.bindparam("dn"), hostname=sa.bindparam("hn")), updates)
        last = rows[-1][0]
    op.execute("INSERT INTO service_counts (plan_id, status, n) "
               "SELECT plan_id, status, count(*) FROM services GROUP BY plan_id, status")


def downgrade():
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_index('ix_operations_state_id')
        batch_op.create_index('ix_operations_state_updated', ['state', 'updated_at'], unique=False)
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_index('ix_services_hostname')
        batch_op.drop_index('ix_services_display_name')
        batch_op.drop_index('ix_services_status_backend_id')
        batch_op.drop_index('ix_services_backend_id')
        batch_op.drop_index('ix_services_status_id')
        batch_op.create_index('ix_services_status_backend', ['status', 'backend'], unique=False)
        batch_op.drop_column('hostname')
        batch_op.drop_column('display_name')
    op.drop_table('service_counts')
