"""The shared SQL store: SQLAlchemy 2 async, Alembic migrations applied on start.

SQLite file by default, PostgreSQL (asyncpg) for several replicas. Tables belong to the
package that writes them; the shared ones (keys, conversations, review) are in
``core.store.tables``.
"""

from core.store.db import Database

__all__ = ["Database"]
