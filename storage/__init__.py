"""Persistence: SQLModel tables, the async engine, repositories, migrations, the writer."""
