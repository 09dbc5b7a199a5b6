"""crispml's wiring: configuration, the runner, MLflow tracking, the command line."""

__version__ = "0.1.0"
