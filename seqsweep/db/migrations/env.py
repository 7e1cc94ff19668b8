"""Alembic environment: always runs on a connection that seqsweep opened.

Run migrations with ``python -m scheduler migrate --db URL``; stores also
apply them automatically when they open a DB.
"""

from alembic import context

from seqsweep.db.engine import make_engine
from seqsweep.db.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # Plain `alembic` CLI use, e.g. autogenerate: the URL comes from -x db=URL.
    url = context.get_x_argument(as_dictionary=True).get("db", "sqlite:///seqsweep.db")
    with make_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
