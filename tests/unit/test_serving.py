"""What a logged model does with a user's request before and after the network (``thread_bench.models.serving``
and the workloads' serving modules), with a stand-in for the network: the thread-density model applies exactly
the training's preprocessing to a raw patch, tiles larger patches, keeps threads per centimetre at any resolution,
and refuses what it cannot answer with one line naming the row and the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from corpus_helpers import raw_patch, training_window
from thread_bench.models import serving as generic
from thread_bench.workloads.digits import serving as digits
from thread_bench.workloads.thread_density import serving

#: A 64 px model's preprocessing as ``serving.describe`` states it for the synthetic corpus: 1 cm windows of 200 px
#: resized to 64 px, each equalised on its own.
LAPTOP = {"input_size": 64, "model_px_per_cm": 64.0, "window_cm": 1.0, "equalisation_scope": "window"}
#: The same as a model trained before December 2026 describes it: no scope, the whole patch equalised first.
BEFORE = {key: value for key, value in LAPTOP.items() if key != "equalisation_scope"}


class Recorder:
    """A stand-in network: remembers its inputs; answers each image's mean horizontal gradient (direction-aware,
    so the quarter turn for ``density_h`` shows)."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.copy())
        return np.abs(np.diff(images.astype(np.float64), axis=2)).mean(axis=(1, 2)).astype(np.float32)


def test_a_one_window_patch_gets_exactly_the_training_preprocessing() -> None:
    patch = raw_patch(1)[:200, :200]
    network = Recorder()

    answer = serving.predict(network, pd.DataFrame({"image": [patch], "px_per_cm": [200.0]}), LAPTOP)

    expected = training_window(patch, 0, 0)
    assert network.calls[0].dtype == np.uint8 and np.array_equal(network.calls[0][0], expected)
    assert np.array_equal(network.calls[1][0], np.rot90(expected))  # density_h: the quarter turn
    assert answer.loc[0, "windows"] == 1
    assert answer.loc[0, "density_v"] == pytest.approx(float(network(expected[None])[0]), rel=1e-6)


@pytest.mark.parametrize(("description", "equalisation"), [(LAPTOP, "window"), (BEFORE, "patch")])
def test_a_larger_patch_is_tiled_evenly_and_averaged(description: dict[str, object], equalisation: str) -> None:
    patch = raw_patch(2)  # 300 x 300 px: 1.5 cm, so windows at 0 and 100 px in each direction
    network = Recorder()

    answer = serving.predict(network, {"image": patch, "px_per_cm": 200.0}, description)

    windows = network.calls[0]
    assert len(windows) == answer.loc[0, "windows"] == 4
    # Each window is the sub-patch the model's training made there: equalised on its own, or (a model trained
    # before the scope existed) cut from the equalised patch.
    for window, (top, left) in zip(windows, [(0, 0), (0, 100), (100, 0), (100, 100)], strict=True):
        assert np.array_equal(window, training_window(patch, top, left, equalisation=equalisation))
    assert answer.loc[0, "density_v"] == pytest.approx(float(np.mean(network(windows))), rel=1e-6)


def test_a_window_s_answer_does_not_depend_on_the_patch_around_it() -> None:
    """Equalised on its own, a window is the same network input whatever surrounds it: a 1 cm request and the
    same centimetre inside a larger patch give the same input; equalised over the patch, they do not."""
    patch = raw_patch(5)  # 300 x 300 px
    patch[200:, 200:] = patch.max()  # a bright corner (lead white, a nail) outside the first window
    alone, _ = serving.patch_windows(patch[:200, :200], 200.0, LAPTOP)
    inside, _ = serving.patch_windows(patch, 200.0, LAPTOP)
    assert np.array_equal(alone[0], inside[0])
    before_alone, _ = serving.patch_windows(patch[:200, :200], 200.0, BEFORE)
    before_inside, _ = serving.patch_windows(patch, 200.0, BEFORE)
    assert not np.array_equal(before_alone[0], before_inside[0])


def test_the_resolution_is_honoured_and_the_answer_stays_in_threads_per_cm() -> None:
    patch = raw_patch(3, size_px=400)
    # The same patch seen at 150 px/cm: a window is 150 px; at 133.3 px/cm it is 133.33 px, cut at 133 and the
    # answer scaled by 133.33 / 133.
    for px_per_cm, side in ((150.0, 150), (400 / 3, 133)):
        windows, scale = serving.patch_windows(patch, px_per_cm, LAPTOP)
        assert windows.shape[1:] == (64, 64) and len(windows) == int(np.ceil(400 / side)) ** 2
        assert scale == pytest.approx(px_per_cm / side, rel=1e-12)


def test_sixteen_bit_and_eight_bit_patches_are_one_image() -> None:
    wide = raw_patch(4, bit_depth=16)
    assert wide.dtype == np.uint16 and wide.max() > 255
    network = Recorder()
    rows = pd.DataFrame({"image": [wide, wide.astype(np.int64)], "px_per_cm": [200.0, 200]})

    answer = serving.predict(network, rows, LAPTOP)

    assert answer.loc[0, "density_v"] == answer.loc[1, "density_v"]  # the schema's int64 is the same image


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"image": [np.zeros((150, 150), np.uint8)], "px_per_cm": [200.0]}, r"150x150 px .* smaller than one window"),
        (
            {"image": [np.zeros((200, 200), np.uint8)], "px_per_cm": [0.0]},
            r"row 0: px_per_cm must be a positive finite number, got 0.0",
        ),
        (
            {"image": [np.zeros((200, 200), np.uint8)], "px_per_cm": ["x"]},
            r"row 0: px_per_cm must be a positive finite number, got 'x'",
        ),
        ({"image": [np.full((200, 200), -1)], "px_per_cm": [200.0]}, r"row 0: gray levels must lie in 0-65535"),
        ({"image": [np.full((200, 200), 0.5)], "px_per_cm": [200.0]}, r"row 0: gray levels must be integers"),
        ({"image": [np.zeros((200, 200, 3), np.uint8)], "px_per_cm": [200.0]}, r"row 0: an image must be a 2-D"),
        ({"image": [[[1, 2], [3]]], "px_per_cm": [200.0]}, r"row 0: image rows differ in length"),
        ({"picture": [np.zeros((200, 200), np.uint8)]}, r"lacks column\(s\) \['image', 'px_per_cm'\]"),
    ],
)
def test_a_bad_request_is_refused_naming_the_row_and_field(request_: dict[str, list[object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serving.predict(Recorder(), pd.DataFrame(request_), LAPTOP)


def test_a_model_whose_resolution_is_unknown_refuses_raw_patches() -> None:
    unknown = {**LAPTOP, "model_px_per_cm": None, "resolution_from": "unknown: corpus not found"}
    with pytest.raises(ValueError, match=r"cannot take raw patches: .*corpus not found"):
        serving.predict(Recorder(), {"image": np.zeros((200, 200), np.uint8), "px_per_cm": 200.0}, unknown)


def test_digits_answer_the_digit_its_probability_and_the_logits() -> None:
    def network(images: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(images), 10), np.float32)
        logits[np.arange(len(images)), images[:, 0, 0] % 10] = 5.0
        return logits

    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 0, 0] = 7
    answer = digits.predict(network, pd.DataFrame({"image": list(images)}), {"input_size": 28})

    assert answer["digit"].tolist() == [0, 7]
    assert answer.loc[1, "probability"] == pytest.approx(np.exp(5) / (np.exp(5) + 9))
    with pytest.raises(ValueError, match=r"row 0: this model takes 28x28 images, got 32x28"):
        digits.predict(network, pd.DataFrame({"image": [np.zeros((28, 32), np.uint8)]}), {"input_size": 28})
    with pytest.raises(ValueError, match=r"row 0: gray levels must lie in 0-255, got 300-300"):
        digits.predict(network, pd.DataFrame({"image": [np.full((28, 28), 300)]}), {"input_size": 28})


def test_the_generic_serving_answers_raw_outputs() -> None:
    answer = generic.predict(
        lambda x: x.reshape(len(x), -1)[:, :3], {"image": np.eye(4, dtype=np.uint8)}, {"input_size": 4}
    )
    assert np.array_equal(np.stack(answer["output"]), [[1.0, 0.0, 0.0]])
