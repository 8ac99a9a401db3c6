"""Top-k accuracy as an `evaluate` metric module kept in the repository.

`evaluate.load("accuracy")` downloads its script from the Hub and fails offline, and the Hub's accuracy takes class
ids, not scores, so it cannot give top-5. This module loads from its path with no network:

    metric = evaluate.load("examples/metrics/top_k_accuracy")
    metric.compute(predictions=logits, references=labels, top_k=[1, 5])  # {"top1_accuracy": ..., "top5_accuracy": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
The fraction of examples whose true class is among the k classes with the highest scores. Ties are broken by class
index (the lower index ranks first), so the result does not depend on the sort algorithm.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): Scores (logits or probabilities) of every class, one row per example.
    references (`list` of `int`): The true class of each example, in [0, number of classes).
    top_k (`list` of `int`, defaults to `[1, 5]`): The values of k to report.
Returns:
    `top{k}_accuracy` (`float`) for each k, in [0, 1].
Examples:
    >>> metric = evaluate.load("examples/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[2, 0], top_k=[1, 2])
    {'top1_accuracy': 0.5, 'top2_accuracy': 1.0}
"""


def top_k_correct(scores: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """Whether each reference ranks among the `k` best scores: fewer than `k` classes score higher, counting a class
    with an equal score as higher when its index is lower (a stable descending order)."""
    true_scores = scores[np.arange(len(references)), references][:, None]  # (N, 1)
    class_index = np.arange(scores.shape[1])[None, :]  # (1, num_classes)
    ahead = (scores > true_scores) | ((scores == true_scores) & (class_index < references[:, None]))
    return ahead.sum(axis=1) < k


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self, predictions: Sequence[Sequence[float]], references: Sequence[int], top_k: Sequence[int] = (1, 5)
    ) -> dict[str, float]:
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
            raise ValueError(
                f"predictions must be one row of class scores per reference; got {scores.shape} scores for "
                f"{len(labels)} references."
            )
        outside = labels[(labels < 0) | (labels >= scores.shape[1])]
        if len(outside):
            raise ValueError(
                f"references {sorted(set(outside.tolist()))} are outside the {scores.shape[1]} scored classes "
                f"[0, {scores.shape[1] - 1}]: the labels and the model's classes disagree."
            )
        bad_k = [k for k in top_k if not isinstance(k, (int, np.integer)) or k < 1]
        if bad_k:
            raise ValueError(f"top_k must hold positive integers, got {list(top_k)}.")
        return {f"top{k}_accuracy": float(top_k_correct(scores, labels, k).mean()) for k in top_k}
