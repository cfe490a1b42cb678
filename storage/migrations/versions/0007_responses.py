"""responses: the Responses API's stored answers (GET /v1/responses/{id},
previous_response_id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:00:00.000000
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('responses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('request_row_id', sa.Uuid(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=True),
    sa.Column('input_items', JSON, nullable=False),
    sa.Column('output_items', JSON, nullable=False),
    sa.Column('previous_response_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('usage', JSON, nullable=True),
    sa.Column('metadata', JSON, nullable=False),
    sa.Column('parameters', JSON, nullable=False),
    sa.Column('incomplete_reason', sa.String(length=30), nullable=True),
    sa.Column('error', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_responses_user_created', 'responses', ['user_id', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_responses_user_created', table_name='responses')
    op.drop_table('responses')
