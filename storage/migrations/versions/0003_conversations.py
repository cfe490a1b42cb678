"""conversations; conversation_id on inference_requests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 16:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# As in 0002: plain ALTER TABLE, no batch mode (which would rebuild inference_requests on
# SQLite). The new column has no foreign key, so SQLite can add it in place.


def upgrade() -> None:
    op.create_table('conversations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=True),
    sa.Column('system_prompt', sa.Text(), nullable=True),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('max_tokens', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_conversations_user_updated', 'conversations',
                    ['user_id', 'updated_at'], unique=False)
    op.add_column('inference_requests',
                  sa.Column('conversation_id', sa.Uuid(), nullable=True))
    op.create_index('ix_inference_requests_conversation_created', 'inference_requests',
                    ['conversation_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_inference_requests_conversation_created',
                  table_name='inference_requests')
    op.drop_column('inference_requests', 'conversation_id')
    op.drop_index('ix_conversations_user_updated', table_name='conversations')
    op.drop_table('conversations')
