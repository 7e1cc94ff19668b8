"""Tables of the results DB.

Users query these with plain SQL, so table and column names are part of the
public interface: change them only through a new migration and a release note.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from seqsweep.settings import DEFAULT_MAX_ATTEMPTS

# JSONB on PostgreSQL so that users can index and query params efficiently.
JsonType = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

datasets = Table(
    "datasets",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("n_rows", Integer, nullable=False),
    Column("n_features", Integer, nullable=False),
    Column("n_classes", Integer, nullable=False),
    Column("classes", JsonType, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("space", JsonType, nullable=False),
    Column("settings", JsonType, nullable=False),
    Column("dataset_hash", String(64), ForeignKey("datasets.hash"), nullable=False),
    Column("status", String(16), nullable=False),  # a seqsweep.vocab.StudyStatus
    # A trial whose worker vanished is requeued at most this many times in all.
    Column("max_attempts", Integer, nullable=False, server_default=str(DEFAULT_MAX_ATTEMPTS)),
)

trials = Table(
    "trials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("params", JsonType, nullable=False),
    Column("status", String(16), nullable=False),  # a seqsweep.vocab.TrialStatus
    Column("attempts", Integer, nullable=False),
    Column("worker", String(255)),
    Column("device", String(64)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("val_loss", Float),
    Column("val_accuracy", Float),
    Column("test_loss", Float),
    Column("test_accuracy", Float),
    Column("error", Text),
    # When the trial's current message was sent; NULL means it still needs one.
    Column("enqueued_at", DateTime(timezone=True)),
    # The worker that runs a trial renews its lease; an expired lease means the
    # worker is gone (kill -9, OOM, lost machine) and the trial is requeued.
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    # Trial numbers trained together with this one as one packed computation, in
    # pack order; NULL when it trained alone. export retrains the same pack.
    Column("pack", JsonType),
    # Every final metric by name (val_loss, val_accuracy, val_auc, val_mae, test_rmse, ...);
    # the val/test loss and accuracy columns above hold the same values where they apply.
    Column("metrics", JsonType),
    UniqueConstraint("study_id", "number"),
    Index(None, "study_id", "status"),
)

trial_epochs = Table(
    "trial_epochs",
    metadata,
    Column("trial_id", Integer, ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("loss", Float),
    Column("accuracy", Float),
    Column("val_loss", Float),
    Column("val_accuracy", Float),
)
