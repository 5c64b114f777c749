"""The digits workload's MLflow names: its metrics, params and artifacts beside the shared ones of
:mod:`thread_bench.tracking` (which knows no workload). Training, analysis and tests import them from here."""

from __future__ import annotations

#: Classification workloads: the share of samples whose largest logit is their class, and what always predicting
#: the training split's most frequent class scores (validation, and the test split in evaluations).
VAL_ACCURACY = "val_accuracy"
BASELINE_VAL_ACCURACY = "baseline_val_accuracy"
TEST_ACCURACY = "test_accuracy"
#: The same per class, as ``<split>_accuracy_class<k>`` (:func:`class_accuracy`).
CLASS_ACCURACY_TEMPLATE = "{split}_accuracy_class{label}"
#: The confusion matrix of a split (rows: true class, columns: predicted class), JSON and figure.
ARTIFACT_CONFUSION = "confusion_{split}.json"
PARAM_SWAP = "swap"
PARAM_ROUNDS = "rounds"
#: Accuracy against the true labels, and against the labels with the swapped pair exchanged.
PINGPONG_ACCURACY_ORIGINAL = "accuracy_original"
PINGPONG_ACCURACY_SWAPPED = "accuracy_swapped"
#: The share of the test images of the pair's first class predicted as its second, and the other way round.
PINGPONG_FIRST_AS_SECOND = "first_as_second"
PINGPONG_SECOND_AS_FIRST = "second_as_first"
PINGPONG_METRIC_TEMPLATE = "{framework}_{quantity}"
ARTIFACT_PINGPONG_TABLE = "pingpong.csv"
ARTIFACT_PINGPONG_FIGURE = "pingpong_confusions.png"
ARTIFACT_PINGPONG_ACCURACY = "pingpong_accuracy.png"


def pingpong_metric(framework: str, quantity: str) -> str:
    """The key of a ping-pong quantity of ``framework`` (``keras_accuracy_swapped``)."""
    return PINGPONG_METRIC_TEMPLATE.format(framework=framework, quantity=quantity)


def class_accuracy(split: str, label: int) -> str:
    """The key of a class's accuracy on ``split`` (``val_accuracy_class7``)."""
    return CLASS_ACCURACY_TEMPLATE.format(split=split, label=label)


#: DigitsModelConfig.model and DigitsDataConfig.n_samples, named where the ping-pong logs them by hand.
PARAM_MODEL = "model"
PARAM_N_SAMPLES = "n_samples"
