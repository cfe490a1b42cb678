"""the free plan may use the offline gateway-demo-embed model

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:30:00.000000
"""
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

DEMO, DEMO_EMBED = "gateway-demo", "gateway-demo-embed"
PLANS = sa.table("subscription_plans", sa.column("name", sa.String()),
                 sa.column("features", sa.JSON()))


def _models(update: Callable[[list[str]], list[str]]) -> None:
    """Rewrite the free plan's model list, if it has one (JSON in Python: same on both
    databases)."""
    conn = op.get_bind()
    features = conn.execute(sa.select(PLANS.c.features)
                            .where(PLANS.c.name == "free")).scalar_one_or_none()
    if not isinstance(features, dict) or not isinstance(features.get("models"), list):
        return
    models = update(list(features["models"]))
    if models != features["models"]:
        conn.execute(sa.update(PLANS).where(PLANS.c.name == "free")
                     .values(features={**features, "models": models}))


def upgrade() -> None:
    # Only where the demo chat model is allowed: an operator who took it away meant it.
    _models(lambda models: [*models, DEMO_EMBED]
            if DEMO in models and DEMO_EMBED not in models else models)


def downgrade() -> None:
    _models(lambda models: [m for m in models if m != DEMO_EMBED])
