"""asyncpg pool, migrations, read-model queries."""
