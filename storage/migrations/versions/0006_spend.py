"""spend: each call's cost, cached answers, budgets per key and per plan

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 21:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Plain ALTER TABLE, no batch mode, for the reason given in 0002.
PLANS = sa.table("subscription_plans", sa.column("name", sa.String()),
                 sa.column("monthly_budget_usd", sa.Float()))
# The seeded plans' monthly budgets (README "Budgets"); enterprise has none.
PLAN_BUDGETS = {"free": 1.0, "pro": 100.0}


def upgrade() -> None:
    # Calls stored before prices existed cost 0: their price was never known.
    op.add_column('inference_requests', sa.Column('cost_usd', sa.Float(), nullable=False,
                                                  server_default='0'))
    op.add_column('inference_requests', sa.Column('cached', sa.Boolean(), nullable=False,
                                                  server_default=sa.false()))
    op.add_column('usage_daily', sa.Column('cost_usd', sa.Float(), nullable=False,
                                           server_default='0'))
    op.add_column('subscription_plans', sa.Column('monthly_budget_usd', sa.Float(),
                                                  nullable=True))
    op.add_column('api_keys', sa.Column('budget_usd', sa.Float(), nullable=True))
    op.add_column('api_keys', sa.Column('budget_period', sa.String(length=10), nullable=True))
    for name, budget in PLAN_BUDGETS.items():
        op.execute(sa.update(PLANS).where(PLANS.c.name == name)
                   .values(monthly_budget_usd=budget))


def downgrade() -> None:
    op.drop_column('api_keys', 'budget_period')
    op.drop_column('api_keys', 'budget_usd')
    op.drop_column('subscription_plans', 'monthly_budget_usd')
    op.drop_column('usage_daily', 'cost_usd')
    op.drop_column('inference_requests', 'cached')
    op.drop_column('inference_requests', 'cost_usd')
