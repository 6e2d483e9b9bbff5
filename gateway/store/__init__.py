"""The shared SQL store: SQLAlchemy 2 async, Alembic migrations applied on start.

SQLite file by default, PostgreSQL (asyncpg) for several replicas. Tables belong to the
package that writes them; the gateway's are in ``gateway.store.tables``.
"""

from gateway.store.db import Database

__all__ = ["Database"]
