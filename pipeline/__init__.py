"""crispml's wiring: configuration, the runner and its phases, the compute backends (`backends/`), MLflow (`tracking/`), files, the command line and the API."""

__version__ = "0.1.0"
