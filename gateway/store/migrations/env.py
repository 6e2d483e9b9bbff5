"""Alembic environment: runs on the connection that ``Database.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from adapters.tables import AdapterBase
from gateway.store.tables import Base
from monitor.tables import MonitorBase
from retrieval.tables import RetrievalBase
from trainer.tables import TrainerBase

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=[
        Base.metadata,
        RetrievalBase.metadata,
        AdapterBase.metadata,
        TrainerBase.metadata,
        MonitorBase.metadata,
    ],
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
