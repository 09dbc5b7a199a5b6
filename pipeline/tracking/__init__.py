"""Everything crispml says to MLflow, and nothing else does: the store, the runs, the registry, the model's format and loading.

- `store`: the tracking URI, the store's health and bounded calls to it, MLflow's quiet set-up;
- `schema`: a new SQLite store written from MLflow's schema kept as SQL (`mlflow_schema.sql`), not by its migrations;
- `runs`: the parent run, a child run per candidate, logging and the logged model;
- `registry`: the `champion` and `challenger` aliases and what undoes a failed run's version;
- `model_format`: how a model is saved (skops, signature, the contract loader flavor);
- `loading`: models loaded by path or URI with their files checked, and `crispml serve`'s app;
- `crispml_pyfunc`: the loader shipped inside every model (MLflow, numpy and pandas only).

The stages never import MLflow (`tests/test_architecture.py` checks it).
"""
