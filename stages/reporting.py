"""What people look at: plots of the data, the comparison and the chosen model, as PNG bytes.

Every function here is pure: it takes results and returns `{file name: PNG bytes}` (or
Markdown). The runner hands them to `pipeline.tracking`, which logs them under `plots/`
and `understanding/`, and to the export folder. Figures are drawn on matplotlib's Agg
canvas directly, without pyplot, so no window opens, no backend is switched for the
caller, and no figure outlives the call. matplotlib is imported by the first plot, not
with this module: the runner draws in worker processes, and its own process need not load it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, PredictionErrorDisplay, RocCurveDisplay

from stages.evaluation import Evaluation
from stages.importance import Importance
from stages.modeling import OK, Leaderboard
from stages.selection import BASELINE, Selection
from stages.understanding import CLASSIFICATION, DataProfile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
CHOSEN_COLOUR = "tab:orange"
OTHER_COLOUR = "tab:blue"
MAX_IMPORTANCE_FEATURES = 20
MAX_MISSING_COLUMNS = 40

CONFUSION_MATRIX = "confusion_matrix.png"
ROC_CURVE = "roc_curve.png"
PRECISION_RECALL = "precision_recall.png"
CALIBRATION = "calibration.png"
PREDICTED_VS_ACTUAL = "predicted_vs_actual.png"
RESIDUALS = "residuals.png"
CV_SCORES = "cv_scores.png"
PERMUTATION_IMPORTANCE = "permutation_importance.png"
MLP_LOSS = "mlp_loss_curve.png"
TARGET_DISTRIBUTION = "target_distribution.png"
MISSING_VALUES = "missing_values.png"


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def evaluation_plots(
    evaluation: Evaluation,
    board: Leaderboard,
    selection: Selection,
    importance: Importance | None,
    curve: TrainingCurve | None = None,
) -> dict[str, bytes]:
    """Every plot of the evaluation: holdout plots for the task, the CV comparison, importance, loss curve.

    Args:
        evaluation: The chosen model's holdout evaluation.
        board: The leaderboard.
        selection: The selection made from it.
        importance: Permutation importance of the chosen model, or None.
        curve: The final model's training curve (`training_curve`), drawn when it has one (the MLP).

    Returns:
        `{file name: PNG bytes}`.
    """
    if board.task in CLASSIFICATION:
        plots = classification_plots(evaluation.y_true, evaluation.y_pred, evaluation.proba, evaluation.classes)
    else:
        plots = regression_plots(evaluation.y_true, evaluation.y_pred)
    plots[CV_SCORES] = cv_scores_plot(board, selection)
    if importance is not None:
        plots[PERMUTATION_IMPORTANCE] = importance_plot(importance)
    if curve is not None:
        plots[MLP_LOSS] = loss_curve_plot(curve)
    return plots


def classification_plots(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray
) -> dict[str, bytes]:
    """Confusion matrix, ROC, precision-recall and calibration curves on the holdout.

    Curves are one-vs-rest per class for more than two classes, and for the positive
    (second) class for two. They need probabilities; without them only the confusion
    matrix is drawn.

    Args:
        y_true: Holdout labels.
        y_pred: Predicted labels.
        proba: Class probabilities, columns in the order of `classes`, or None.
        classes: Every class label.

    Returns:
        `{file name: PNG bytes}`.
    """
    labels = [str(c) for c in classes]
    truth = np.asarray(y_true).astype(str)
    fig = _figure(5.0 + 0.3 * len(labels), 4.5 + 0.3 * len(labels))
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        truth, np.asarray(y_pred).astype(str), labels=labels, ax=ax, colorbar=False, xticks_rotation=45 if len(labels) > 4 else "horizontal"
    )
    ax.set_title(f"Confusion matrix (holdout, {len(truth)} rows)")
    plots = {CONFUSION_MATRIX: _png(fig)}
    if proba is None:
        return plots
    shown = [1] if len(labels) == 2 else range(len(labels))  # binary: the positive class only

    fig = _figure()
    ax = fig.add_subplot()
    for i in shown:
        RocCurveDisplay.from_predictions(truth == labels[i], proba[:, i], name=labels[i], ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set_xlabel("false positive rate")  # the displays label the axes with the last curve's class only
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("ROC curve (holdout" + (", one-vs-rest)" if len(labels) > 2 else f", positive class {labels[1]})"))
    plots[ROC_CURVE] = _png(fig)

    fig = _figure()
    ax = fig.add_subplot()
    for i in shown:
        PrecisionRecallDisplay.from_predictions(truth == labels[i], proba[:, i], name=labels[i], ax=ax)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title("Precision-recall curve (holdout" + (", one-vs-rest)" if len(labels) > 2 else ")"))
    plots[PRECISION_RECALL] = _png(fig)

    fig = _figure()
    ax = fig.add_subplot()
    bins = 5 if len(truth) < 500 else 10
    for i in shown:
        CalibrationDisplay.from_predictions(truth == labels[i], proba[:, i], n_bins=bins, name=labels[i], ax=ax, ref_line=i == shown[0])
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of positives")
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"Calibration (holdout, {bins} bins" + (", one-vs-rest)" if len(labels) > 2 else ")"))
    plots[CALIBRATION] = _png(fig)
    return plots


def regression_plots(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, bytes]:
    """Predicted against actual values, and residuals against predicted values, on the holdout.

    Args:
        y_true: Holdout targets.
        y_pred: Predictions.

    Returns:
        `{file name: PNG bytes}`.
    """
    plots = {}
    for name, kind, title in (
        (PREDICTED_VS_ACTUAL, "actual_vs_predicted", "Actual against predicted (holdout)"),
        (RESIDUALS, "residual_vs_predicted", "Residuals against predicted (holdout)"),
    ):
        fig = _figure(5.0, 5.0)
        ax = fig.add_subplot()
        PredictionErrorDisplay.from_predictions(
            np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float), kind=kind, ax=ax, subsample=2000, random_state=0
        )
        ax.set_title(f"{title}, {len(y_true)} rows")
        plots[name] = _png(fig)
    return plots


def cv_scores_plot(board: Leaderboard, selection: Selection) -> bytes:
    """Box plot of each candidate's per-fold scores: the leaderboard at a glance.

    Candidates are drawn best first from the top, the chosen one highlighted, each
    labelled with its chance of losing more than the tolerance against the top one
    (`Comparison.p_worse`), marked `≈ top` when that makes it practically as good.

    Args:
        board: The leaderboard.
        selection: The selection made from it.

    Returns:
        PNG bytes.
    """
    rows = [r for r in board.rows if r.status == OK and not math.isnan(r.mean(board.metric))][::-1]
    limits = cv_axis_limits({r.name: r.fold_scores[board.metric] for r in rows})
    labels = []
    for r in rows:
        c = selection.comparison(r.name)
        note = "top" if r.name == selection.top else (f"p_worse {c.p_worse:.0%}" + (", ≈ top" if c.equivalent else "") if c else "")
        scores = r.fold_scores[board.metric]
        if limits and not all(limits[0] <= v <= limits[1] for v in scores):
            note += f"; mean {np.mean(scores):.4g}, off the axis"
        labels.append(f"{r.name} ({note})" + (" *chosen*" if r.name == selection.chosen else ""))
    fig = _figure(7.5, max(2.5, 1.4 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    if rows:
        boxes = ax.boxplot(
            [r.fold_scores[board.metric] for r in rows],
            orientation="horizontal",
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "black"},
        )
        for box, r in zip(boxes["boxes"], rows):
            box.set_facecolor(CHOSEN_COLOUR if r.name == selection.chosen else OTHER_COLOUR)
            box.set_alpha(0.6)
        for i, r in enumerate(rows, start=1):  # every fold, not only the outliers
            ax.scatter(r.fold_scores[board.metric], [i] * len(r.fold_scores[board.metric]), s=10, color="black", zorder=3)
        ax.set_yticks(range(1, len(rows) + 1), labels)
        if limits:
            ax.set_xlim(*limits)
    ax.set_xlabel(f"{board.metric} per fold ({board.n_folds}-fold CV)")
    fig.suptitle(  # over the whole figure: over the axes alone, long labels push it off the right edge
        f"Cross-validated {board.metric}; chosen: {selection.chosen} by {selection.rule}\n"
        f"p_worse: chance of losing more than {selection.tolerance:.4g} against the top one",
        fontsize="medium",
    )
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def cv_axis_limits(fold_scores: Mapping[str, tuple[float, ...]], room: float = 0.15) -> tuple[float, float] | None:
    """The score axis of the CV plot, when the baseline would squeeze the real candidates into a sliver.

    The axis spans the other candidates' fold scores (plus `room` of their spread on each
    side); None (matplotlib's own axis) when there is no baseline, nothing else to show, or
    the baseline lies within that span anyway.

    Args:
        fold_scores: Each candidate's fold scores.
        room: The margin on each side, as a share of the spread.

    Returns:
        `(low, high)`, or None.
    """
    others = [v for name, scores in fold_scores.items() if name != BASELINE for v in scores if math.isfinite(v)]
    baseline = [v for v in fold_scores.get(BASELINE, ()) if math.isfinite(v)]
    if not others or not baseline:
        return None
    low, high = min(others), max(others)
    pad = max((high - low) * room, 1e-3 * max(1.0, abs(high)))
    low, high = low - pad, high + pad
    return None if all(low <= v <= high for v in baseline) else (low, high)


def importance_plot(importance: Importance) -> bytes:
    """Horizontal bars of permutation importance, most important on top.

    Args:
        importance: From `stages.importance.permutation_importances`.

    Returns:
        PNG bytes.
    """
    n = min(len(importance.features), MAX_IMPORTANCE_FEATURES)
    fig = _figure(6.5, max(2.5, 1.2 + 0.35 * n))
    ax = fig.add_subplot()
    positions = np.arange(n)[::-1]
    ax.barh(positions, importance.mean[:n], xerr=importance.std[:n], color=OTHER_COLOUR, alpha=0.8)
    ax.set_yticks(positions, importance.features[:n])
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"drop in holdout {importance.metric} when the column is shuffled")
    more = f" (top {n} of {len(importance.features)})" if len(importance.features) > n else ""
    ax.set_title(f"Permutation importance of the input columns{more}", fontsize="medium")
    return _png(fig)


@dataclass(frozen=True)
class TrainingCurve:
    """A network's training loss per epoch, and its validation score per epoch under early stopping.

    What `loss_curve_plot` draws, taken from the fitted model by `training_curve`: a few
    numbers to hand to the process that draws, not the model itself.
    """

    model: str
    loss: tuple[float, ...]
    validation: tuple[float, ...] | None = None


def training_curve(estimator: object) -> TrainingCurve | None:
    """The training curve of a fitted network.

    Args:
        estimator: A fitted estimator; a `TransformedTargetRegressor` is looked into (the
            regression MLP learns a standardised target, so its loss is in those units).

    Returns:
        Its curve, or None when it has none (it is not an MLP).
    """
    estimator = getattr(estimator, "regressor_", estimator)
    loss = getattr(estimator, "loss_curve_", None)
    if loss is None:
        return None
    validation = getattr(estimator, "validation_scores_", None)
    return TrainingCurve(
        type(estimator).__name__, tuple(map(float, loss)), None if validation is None else tuple(map(float, validation))
    )


def loss_curve_plot(curve: TrainingCurve) -> bytes:
    """The training loss per epoch of a network, and its validation score under early stopping.

    Args:
        curve: The network's curve (`training_curve`).

    Returns:
        PNG bytes.
    """
    fig = _figure()
    ax = fig.add_subplot()
    epochs = np.arange(1, len(curve.loss) + 1)
    ax.plot(epochs, curve.loss, color=OTHER_COLOUR, label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if curve.validation is not None:
        right = ax.twinx()
        right.plot(epochs[: len(curve.validation)], curve.validation, color=CHOSEN_COLOUR, label="validation score")
        right.set_ylabel("validation score (early stopping)")
        right.legend(loc="center right", fontsize="small")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{curve.model} training: {len(curve.loss)} epochs", fontsize="medium")
    ax.grid(alpha=0.3)
    return _png(fig)


def understanding_plots(profile: DataProfile, y: pd.Series) -> dict[str, bytes]:
    """The target's distribution and each column's share of missing values.

    Args:
        profile: The data profile.
        y: The labelled target values.

    Returns:
        `{file name: PNG bytes}`.
    """
    fig = _figure()
    ax = fig.add_subplot()
    if profile.task in CLASSIFICATION:
        names = [c for c, _ in profile.class_balance]
        counts = [n for _, n in profile.class_balance]
        ax.bar(range(len(names)), counts, color=OTHER_COLOUR)
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0)
        ax.set_ylabel("rows")
        for i, n in enumerate(counts):
            ax.annotate(f"{n / sum(counts):.0%}", (i, n), ha="center", va="bottom", fontsize="small")
    else:
        values = pd.to_numeric(y, errors="coerce").dropna().to_numpy(dtype=float)
        ax.hist(values, bins=min(50, max(10, int(math.sqrt(len(values))))), color=OTHER_COLOUR, alpha=0.8)
        ax.axvline(float(np.median(values)), color=CHOSEN_COLOUR, linestyle="--", label="median")
        ax.set_ylabel("rows")
        ax.legend(fontsize="small")
    ax.set_xlabel(profile.target)
    ax.set_title(f"Target '{profile.target}' ({profile.task}, {len(y)} labelled rows)", fontsize="medium")
    plots = {TARGET_DISTRIBUTION: _png(fig)}

    shares = {c.name: c.missing_share for c in profile.columns}
    shares[profile.target] = profile.target_missing / profile.n_rows if profile.n_rows else 0.0
    ordered = sorted(shares.items(), key=lambda kv: -kv[1])[:MAX_MISSING_COLUMNS]
    fig = _figure(6.5, max(2.5, 1.2 + 0.3 * len(ordered)))
    ax = fig.add_subplot()
    positions = np.arange(len(ordered))[::-1]
    ax.barh(positions, [s for _, s in ordered], color=[CHOSEN_COLOUR if n == profile.target else OTHER_COLOUR for n, _ in ordered])
    ax.set_yticks(positions, [n for n, _ in ordered])
    ax.set_xlim(0, max(0.05, max(s for _, s in ordered) * 1.15))
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    for p, (_, s) in zip(positions, ordered):
        ax.annotate(f"{s:.1%}", (s, p), xytext=(3, 0), textcoords="offset points", va="center", fontsize="small")
    total = sum(1 for s in shares.values() if s > 0)
    ax.set_title(
        f"Missing values per column ({total} of {len(shares)} have gaps; the target in orange)" if total else "No missing values",
        fontsize="medium",
    )
    plots[MISSING_VALUES] = _png(fig)
    return plots


def html_report(title: str, markdown_text: str, plots: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: a Markdown report with its plots inside it (as data URIs).

    MLflow's artifact viewer shows an `.html` artifact as a page, but a Markdown artifact's
    image links point nowhere there; this page needs no other file.

    Args:
        title: The page's title.
        markdown_text: The report (tables, lists, headings); links to the plots by file name
            are replaced by the images themselves.
        plots: PNG bytes by file name; those the text does not link are appended.

    Returns:
        HTML.
    """
    import base64
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"], output_format="html")
    for name, png in plots.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        if f'src="{name}"' in body:
            body = body.replace(f'src="{name}"', f'src="{uri}"')
        else:
            body += f'\n<p><img alt="{html.escape(name)}" src="{uri}"></p>'
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:0.8rem 0}th,td{border:1px solid #ccc;padding:0.2rem 0.5rem;text-align:left}"
        "code{background:#f4f4f4;padding:0 0.2rem}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def understanding_report(profile: DataProfile, plots: Mapping[str, bytes]) -> str:
    """The data understanding report: the profile in Markdown, with its plots linked beside it.

    Args:
        profile: The data profile.
        plots: The plots from `understanding_plots`, stored in the same folder as the report.

    Returns:
        Markdown.
    """
    titles = {TARGET_DISTRIBUTION: "Target distribution", MISSING_VALUES: "Missing values"}
    links = [f"![{titles.get(name, name)}]({name})" for name in plots]
    return profile.to_markdown() + "\n## Plots\n\n" + "\n\n".join(links) + "\n"
