"""The CRISP-DM phases as pure, typed functions; no module here imports `pipeline`.

1. understanding (with cleaning, dates, leaks), 2. preparation, 3. modeling (model_registry,
fold_fits, fitting, racing, tuning, metrics), 4. evaluation (selection, importance, gate,
reporting, model_card, challenge), 5. deployment (contract). See the README's Layout.
"""
