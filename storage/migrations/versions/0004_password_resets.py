"""password reset tokens; session generation and password_changed_at on users

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Plain ALTER TABLE, no batch mode, for the reason given in 0002: batch mode would rebuild
# `users` on SQLite and cascade-delete every key and request.


def upgrade() -> None:
    # Every existing session was issued under generation 0 (JWTs without the claim count
    # as 0), so they all stay valid until the user's first reset.
    op.add_column('users', sa.Column('session_generation', sa.Integer(), nullable=False,
                                     server_default='0'))
    op.add_column('users', sa.Column('password_changed_at', sa.DateTime(timezone=True),
                                     nullable=True))
    op.create_table('password_reset_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_password_reset_tokens_user_id'), 'password_reset_tokens',
                    ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_password_reset_tokens_user_id'), table_name='password_reset_tokens')
    op.drop_table('password_reset_tokens')
    op.drop_column('users', 'password_changed_at')
    op.drop_column('users', 'session_generation')
