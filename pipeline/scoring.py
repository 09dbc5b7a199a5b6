"""Batch scoring (`crispml predict`): a saved model, checked, scores a file of new rows.

The model is loaded by folder (its files checked against its manifest) or by `models:/` URI
(against the hashes recorded when it was logged); its data contract checks the rows
(`stages.contract`), and the scored rows are written atomically, the input's rows in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DataError
from pipeline.exports import verify_export
from pipeline.files import check_scored_output, read_table, write_table
from pipeline.tracking import loading
from stages import contract


@dataclass(frozen=True)
class Prediction:
    """What batch scoring did.

    Attributes:
        rows: Rows scored (always every input row).
        warnings: Package versions that differ from training, ignored columns, drift.
        check: The data contract check (drift counts per column).
    """

    rows: int
    warnings: tuple[str, ...]
    check: contract.ContractCheck


def predict(model: str, data_path: Path, out_path: Path, tracking_uri: str, overwrite: bool) -> Prediction:
    """Batch scoring: check and load a saved model, score a file against its data contract, write the scored rows.

    A model folder is checked against the SHA-256 hashes in its `manifest.json` before
    anything in it is loaded. Only the folder or URI named is loaded. The file is read as
    the training file was: the contract's cleaning plan (missing markers, spaces, numbers,
    dates) is applied before its checks, so the raw training file scores as it is.

    Args:
        model: A model folder or URI.
        data_path: Rows to score (CSV or Parquet).
        out_path: Where to write them with `prediction` (and `proba_<class>`) columns.
        tracking_uri: The store for `models:/` and `runs:/` URIs.
        overwrite: Replace an existing output file.

    Returns:
        How many rows were scored, and the warnings.

    Raises:
        CrispmlError: The model, the data or the output path is unusable, or the rows break the contract.
    """
    if Path(out_path).resolve() == Path(data_path).resolve():
        raise DataError(f"--out {out_path} is the input file; write the scores to another file")
    check_scored_output(Path(out_path), overwrite)  # before the model is loaded and the data read
    if not loading.is_model_uri(model) and Path(model).is_dir():
        verify_export(Path(model))
    loaded = loading.load_model(model, tracking_uri)
    data = read_table(Path(data_path))
    scored = contract.score(loaded.model, data, loaded.contract)
    write_table(scored.frame, Path(out_path), overwrite)
    return Prediction(rows=len(scored.frame), warnings=(*loaded.warnings, *scored.warnings), check=scored.check)
