"""admin flag on users; served_by and upstream_attempts on inference_requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 13:10:00.000000
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Plain ALTER TABLE on both databases, no batch mode: on SQLite batch mode would rebuild
# `users` (copy, DROP, rename), and with foreign keys on (storage/engine.py) that DROP
# deletes every API key and request of every user through ON DELETE CASCADE. SQLite adds
# columns in place, and drops them in place since 3.35 (2021); none of these columns is
# indexed, unique or constrained, which DROP COLUMN would refuse.


def upgrade() -> None:
    # The server default fills the existing users in: nobody is an admin until granted.
    op.add_column('users', sa.Column('is_admin', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.add_column('inference_requests',
                  sa.Column('served_by', sa.String(length=200), nullable=True))
    op.add_column('inference_requests', sa.Column(
        'upstream_attempts',
        sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
        nullable=True))


def downgrade() -> None:
    op.drop_column('inference_requests', 'upstream_attempts')
    op.drop_column('inference_requests', 'served_by')
    op.drop_column('users', 'is_admin')
