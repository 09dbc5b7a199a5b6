"""A new SQLite store written from MLflow's schema kept as SQL (`pipeline.tracking.schema`), not by its migrations."""

from __future__ import annotations

import sqlite3

import mlflow
import mlflow.store.db.utils as db_utils
import pytest
from mlflow import MlflowClient

from pipeline.tracking import schema, store

from conftest import sqlite_uri

TEMPLATE = schema.TEMPLATE.read_text(encoding="utf-8")


def _revision(database) -> str:
    with sqlite3.connect(database) as connection:
        (found,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    connection.close()
    return found


def _tables(database) -> set[str]:
    with sqlite3.connect(database) as connection:
        found = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    connection.close()
    return found


def _items(sql: str) -> tuple[str, ...]:
    """A CREATE TABLE's columns and constraints, in order of their text: MLflow's migrations
    put its constraints in another order on each run (they iterate over sets)."""
    head, _, body = sql.partition("(")
    items, depth, quoted, item = [], 0, False, ""
    for char in body.rstrip().removesuffix(")"):
        quoted ^= char == "'"
        depth += (char == "(") - (char == ")") if not quoted else 0
        if char == "," and depth == 0 and not quoted:
            items.append(item.strip())
            item = ""
        else:
            item += char
    return (head.strip(), *sorted([*items, item.strip()]))


def _store_contents(database) -> tuple[set, dict]:
    """A store's schema (tables, indexes, triggers) and every table's rows but the default experiment's."""
    with sqlite3.connect(database) as connection:
        entries = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        rows = {name: sorted(connection.execute(f'SELECT * FROM "{name}"').fetchall()) for kind, name, _, _ in entries if kind == "table"}
    connection.close()
    rows.pop("experiments")  # its creation time and artifact folder are the store's own
    return {(kind, name, table, _items(sql) if kind == "table" else sql) for kind, name, table, sql in entries}, rows


def test_the_template_is_the_store_the_installed_mlflow_makes(tmp_path):
    if schema.made_by(TEMPLATE) != mlflow.__version__:
        pytest.skip(
            f"the template was made by MLflow {schema.made_by(TEMPLATE)}, this is {mlflow.__version__}: "
            "new stores are made by MLflow's migrations; run `python -m pipeline.tracking.schema` to make it again"
        )
    MlflowClient(f"sqlite:///{tmp_path / 'mlflows.db'}").search_experiments()  # by MLflow's migrations
    assert schema.make_store(tmp_path / "ours.db")
    theirs, ours = _store_contents(tmp_path / "mlflows.db"), _store_contents(tmp_path / "ours.db")
    assert len(ours[0]) > 100 and ours[1]["alembic_version"] == [(db_utils._get_latest_schema_revision(),)]
    assert ours == theirs  # every table, column, constraint, index and trigger, and the rows MLflow puts in


def test_a_new_store_is_written_from_the_template_without_mlflows_migrations(tmp_path, monkeypatch):
    if schema.made_by(TEMPLATE) != mlflow.__version__:
        pytest.skip("the template is another MLflow's (see the test above)")

    def migrations(engine):
        raise AssertionError("MLflow's migrations ran")

    monkeypatch.setattr(db_utils, "_initialize_tables", migrations)
    store.check_store(sqlite_uri(tmp_path), writable=True)
    assert _revision(tmp_path / "mlflow.db") == db_utils._get_latest_schema_revision()
    client = MlflowClient(store.for_mlflow(sqlite_uri(tmp_path)))  # a store MLflow works with as with its own
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0)
    client.create_registered_model("e")
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert [e.name for e in client.search_experiments()] == ["e", "Default"]


def test_a_template_made_by_another_mlflow_is_not_used(tmp_path, monkeypatch):
    other = tmp_path / "other.sql"
    other.write_text(TEMPLATE.replace(f"MLflow {schema.made_by(TEMPLATE)},", "MLflow 0.0.1,", 1), encoding="utf-8")
    monkeypatch.setattr(schema, "TEMPLATE", other)
    assert not schema.make_store(tmp_path / "unused.db")
    assert not (tmp_path / "unused.db").exists()
    store.check_store(sqlite_uri(tmp_path / "mlruns"), writable=True)  # MLflow makes it, by its migrations
    assert _revision(tmp_path / "mlruns" / "mlflow.db") == db_utils._get_latest_schema_revision()


def test_a_template_that_fails_half_way_leaves_an_empty_file_that_mlflow_fills(tmp_path, monkeypatch):
    broken = tmp_path / "broken.sql"
    broken.write_text(TEMPLATE.replace("COMMIT;", "CREATE TABLE alembic_version (x INTEGER);\nCOMMIT;"), encoding="utf-8")
    monkeypatch.setattr(schema, "TEMPLATE", broken)
    monkeypatch.setattr(schema.mlflow, "__version__", schema.made_by(TEMPLATE))
    assert not schema.make_store(tmp_path / "half.db")
    assert _tables(tmp_path / "half.db") == set()  # one transaction: none of it
    store.check_store(sqlite_uri(tmp_path / "mlruns"), writable=True)
    assert _revision(tmp_path / "mlruns" / "mlflow.db") == db_utils._get_latest_schema_revision()


def test_an_existing_store_is_left_as_it_is(tmp_path, monkeypatch):
    store.check_store(sqlite_uri(tmp_path), writable=True)
    client = MlflowClient(store.for_mlflow(sqlite_uri(tmp_path)))
    client.create_experiment("kept")
    monkeypatch.setattr(schema, "make_store", lambda database: pytest.fail("an existing store was written over"))
    store.check_store(sqlite_uri(tmp_path), writable=True)
    assert "kept" in [e.name for e in client.search_experiments()]
