"""The go/no-go gate: every business criterion written down before training must hold on the holdout.

`decide` checks each criterion of the config's `[business]` section (a minimum score, a
margin over the baseline, a largest gap between cross-validation and holdout, ...) against
the holdout and returns go, or no-go with each failed criterion named.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from stages.evaluation import Footprint
from stages.metrics import METRICS

GO = "go"
NO_GO = "no-go"


class Criteria(Protocol):
    """The business success criteria the gate reads: the config's `[business]` section has them.

    Attributes:
        min_score: Worst acceptable holdout score (highest, for lower-is-better metrics), or None.
        min_margin_over_baseline: The model must beat the baseline by more than this.
        max_latency_ms_per_row: Most milliseconds per row, or None.
        max_model_mb: Largest model in MB, or None.
    """

    @property
    def min_score(self) -> float | None: ...

    @property
    def min_margin_over_baseline(self) -> float: ...

    @property
    def max_latency_ms_per_row(self) -> float | None: ...

    @property
    def max_model_mb(self) -> float | None: ...


@dataclass(frozen=True)
class Check:
    """One business criterion, checked.

    Attributes:
        criterion: The config key (`min_score`, `min_margin_over_baseline`, ...).
        passed: Whether it holds.
        value: The measured value.
        threshold: The configured limit.
        detail: One sentence saying what was measured against what.
    """

    criterion: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class Decision:
    """The go/no-go gate's verdict.

    Attributes:
        go: True when every criterion holds.
        reasons: The failed criteria, one sentence each (empty on go).
        checks: Every criterion checked, passed or not.
    """

    go: bool
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]

    @property
    def label(self) -> str:
        """`go` or `no-go`."""
        return GO if self.go else NO_GO

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-friendly values."""
        return {"decision": self.label, "go": self.go, "reasons": list(self.reasons), "checks": [asdict(c) for c in self.checks]}


def decide(
    metric: str,
    holdout: float,
    baseline_holdout: float,
    footprint: Footprint,
    criteria: Criteria,
) -> Decision:
    """The go/no-go gate: check the business criteria against the holdout evaluation.

    Args:
        metric: The primary metric.
        holdout: The chosen model's holdout score.
        baseline_holdout: The baseline's holdout score on the same rows.
        footprint: The final model's prediction time and size.
        criteria: The business criteria (the `[business]` section).

    Returns:
        The decision: go only if every check passes.
    """
    min_score, min_margin_over_baseline = criteria.min_score, criteria.min_margin_over_baseline
    max_latency_ms_per_row, max_model_mb = criteria.max_latency_ms_per_row, criteria.max_model_mb
    m = METRICS[metric]
    checks = []
    if min_score is not None:
        ok = not math.isnan(holdout) and m.better(holdout, min_score) >= 0
        bound = "lowest" if m.greater_is_better else "highest (lower is better)"
        verb = "meets" if ok else "fails"
        checks.append(
            Check("min_score", ok, holdout, min_score, f"holdout {metric} {holdout:.4f} {verb} min_score {min_score:g}, the {bound} acceptable")
        )
    margin = m.better(holdout, baseline_holdout)
    ok = not math.isnan(margin) and margin > min_margin_over_baseline
    checks.append(
        Check(
            "min_margin_over_baseline",
            ok,
            margin,
            min_margin_over_baseline,
            f"holdout {metric} {holdout:.4f} {'beats' if margin > 0 else 'does not beat'} the baseline's "
            f"{baseline_holdout:.4f} by {margin:.4f}; more than {min_margin_over_baseline:g} is required",
        )
    )
    if max_latency_ms_per_row is not None:
        ok = footprint.ms_per_row <= max_latency_ms_per_row
        checks.append(
            Check(
                "max_latency_ms_per_row",
                ok,
                footprint.ms_per_row,
                max_latency_ms_per_row,
                f"prediction takes {footprint.ms_per_row:.4f} ms per row; at most {max_latency_ms_per_row:g} is allowed",
            )
        )
    if max_model_mb is not None:
        ok = footprint.model_mb <= max_model_mb
        checks.append(
            Check(
                "max_model_mb",
                ok,
                footprint.model_mb,
                max_model_mb,
                f"the model is {footprint.model_mb:.3f} MB; at most {max_model_mb:g} is allowed",
            )
        )
    reasons = tuple(c.detail for c in checks if not c.passed)
    return Decision(go=not reasons, reasons=reasons, checks=tuple(checks))
