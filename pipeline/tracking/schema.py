"""A new SQLite store in milliseconds: MLflow's schema, built by its migrations once and kept as SQL.

MLflow makes a new SQLite store by running each of its schema migrations in turn, about
sixty of them; on a fresh folder that is over a second of every first `crispml run` (and of
every test that makes a store). `mlflow_schema.sql` holds what they build: a store MLflow
made, dumped by SQLite (`Connection.iterdump`), less the default experiment, which MLflow
adds with this store's own artifact location when it opens the store. `make_store` writes a
new database from it in one transaction, so a process stopped half-way leaves an empty file,
which MLflow fills as it would a new one. The template is used only by the MLflow version that
made it (its first line names it): another version, which may have other migrations, makes its
stores itself, as slowly as before. MLflow then opens the store as any other, checking its schema
revision against its own.

Made again after an MLflow upgrade with `python -m pipeline.tracking.schema`; a test compares
the file with a store the installed MLflow makes.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import mlflow

TEMPLATE = Path(__file__).with_name("mlflow_schema.sql")
"""The SQL of an empty MLflow SQLite store at one schema revision."""
LEFT_OUT = ('INSERT INTO "experiments"',)
"""Rows of the dump not kept: the default experiment names the folder it was made in."""
AFTER_TABLES = ("CREATE INDEX", "CREATE UNIQUE INDEX", "CREATE TRIGGER", "CREATE VIEW")
"""Statements of the dump that follow every table and row."""
MADE_BY = "-- An empty MLflow SQLite store: MLflow "
"""How the template's first line starts; the MLflow version that made it follows."""


def make_store(database: Path) -> bool:
    """Write a new SQLite store at `database` from the template (the caller holds the store's lock).

    Args:
        database: Where the store goes; it must not exist yet.

    Returns:
        True when the store was written; False when there is no template for this MLflow or
        SQLite refused it (the file may then exist, empty: MLflow makes the store in it as in a new one).
    """
    try:
        script = TEMPLATE.read_text(encoding="utf-8")
    except OSError:
        return False
    if made_by(script) != mlflow.__version__:  # another MLflow may have other migrations
        return False
    try:
        connection = sqlite3.connect(database)
        try:
            connection.executescript(script)  # BEGIN ... COMMIT: all of it or, closed before COMMIT, none
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return True


def made_by(script: str) -> str | None:
    """The MLflow version that made a template, from its first line, or None."""
    first = script.split("\n", 1)[0]
    return first[len(MADE_BY) :].split(",", 1)[0] if first.startswith(MADE_BY) else None


def revision(script: str) -> str | None:
    """The schema revision a template's SQL sets, or None."""
    prefix = 'INSERT INTO "alembic_version" VALUES(\''
    line = next((line for line in script.splitlines() if line.startswith(prefix)), None)
    return None if line is None else line[len(prefix) :].split("'", 1)[0]


def dump_new_store() -> str:
    """The template's text: a store the installed MLflow makes, by its own migrations, dumped as SQL."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="crispml-schema-") as folder:
        database = Path(folder) / "mlflow.db"
        MlflowClient(f"sqlite:///{database}").search_experiments(max_results=1)  # MLflow makes it
        connection = sqlite3.connect(database)
        try:
            statements = [s for s in connection.iterdump() if not s.startswith(LEFT_OUT)]
        finally:
            connection.close()
    # Tables and rows come by name; indexes and triggers in the order the migrations made them,
    # which varies from one run to the next (they iterate over sets): sorted, the file is the same each time.
    later = sorted(s for s in statements if s.startswith(AFTER_TABLES))
    tables = [s for s in statements if not s.startswith(AFTER_TABLES)]
    lines = [*tables[:-1], *later, tables[-1]]  # ... COMMIT;
    found = revision("\n".join(lines))
    header = (
        f"{MADE_BY}{mlflow.__version__}, schema revision {found}.\n"
        "-- Made by `python -m pipeline.tracking.schema` from a store MLflow made; do not edit.\n"
    )
    return header + "\n".join(lines) + "\n"


if __name__ == "__main__":
    TEMPLATE.write_text(dump_new_store(), encoding="utf-8")
    print(f"wrote {TEMPLATE} (schema revision {revision(TEMPLATE.read_text(encoding='utf-8'))})")
