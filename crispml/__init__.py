"""crispml: a model-comparison AutoML pipeline that follows CRISP-DM, tracked in MLflow.

The Python API (`pipeline.api`): `run` the pipeline on a DataFrame or a file and get a
`Result`; `predict` with a saved model. The command line is `crispml` (`pipeline.cli`).
"""

from pipeline.api import KEYWORDS, Result, predict, run
from stages.errors import CrispmlError

__all__ = ["KEYWORDS", "CrispmlError", "Result", "predict", "run"]
