"""The CRISP-DM phases as pure, typed functions; no module here imports `pipeline` or MLflow.

1. understanding (with cleaning, dates, leaks), 2. preparation, 3. modeling (model_registry,
fold_fits, fitting, racing, tuning, metrics), 4. evaluation (selection, importance, gate,
reporting, model_card, challenge), 5. deployment (contract). A stage that reads several
settings takes its config section whole, behind a protocol it defines (`gate.Criteria`,
`selection.SelectionSettings`, `preparation.Encoding`). See the README's Layout.
"""
