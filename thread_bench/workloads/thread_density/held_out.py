"""The held-out-style test: the CNN and the FFT on canvases made with styles that training never saw.

A model's validation split comes from the generator and the settings it trained on, so it cannot show whether the
model generalises. This test can: its windows come from :data:`.synthetic.HELD_OUT_MIX`, whose twill weave, slub
threads and scatter imaging the training mix (:data:`.synthetic.TRAINING_MIX`) never draws, on paintings of a seed
of their own (:data:`HELD_OUT_SEED`), so no setting of a training run can tune to them by accident.

- **Windows.** ``n_windows`` windows of 1 cm (200 px at the corpus' 200 px/cm), spread over ``n_paintings``
  paintings, each with its exact truth (:mod:`.synthetic`: the mean of ``|grad phi|``) for both thread families.
- **Methods.** Every model answers through its own pyfunc, as a user's request would (it equalises and resamples
  each window itself); the FFT counter (:func:`.counting.fft_measure`) measures the same windows at their
  resolution. A window and family is one *sample*: the vertical density is the model's output, the horizontal
  one the model on the quarter-turned window, as the labels are defined.
- **Scores.** The normalised MAE (the training loss: mean relative error) of each method over the samples that
  every method measured (the FFT fails on a few; how many is reported), overall and per difficulty bin:
  density, fine-scale contrast, occluded share, irregularity, source resolution, the imaging blur's transfer at
  the thread frequency (near 0: the weave is not in the image at all), and each style axis (weave, thread
  profile, imaging condition).
- **Verdict.** One line per model: its nMAE against the FFT's, and the bins of at least :data:`MIN_BIN` samples
  where it beats the FFT and where it loses.

``python -m thread_bench.held_out --model_uri URI [--model_uri URI ...]`` (``mlflow run . -e held_out -P
model_uri=URI``) scores models (default: the champion, else the shipped model) and writes its tables and figure
into ``--out``; the analysis scores each framework's best model the same way and logs it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from thread_bench import cli
from thread_bench.progress import Ticker
from thread_bench.workloads import HeldOut
from thread_bench.workloads.thread_density import keys, synthetic
from thread_bench.workloads.thread_density.counting import fft_measure

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The test corpus is the same for everyone: a seed no training draws (training corpora use ``data_seed``, 0-99).
HELD_OUT_SEED = 20_261_206
DEFAULT_PAINTINGS = 60
DEFAULT_WINDOWS = 480
#: Windows are 1 cm, at the corpus resolution: the size the models are trained on.
WINDOW_CM = 1.0
#: Where the command line writes its tables and figure unless ``--out`` says otherwise.
DEFAULT_OUT = "reports/held_out"
#: A bin with fewer samples is shown but not called a win or a loss.
MIN_BIN = 20
#: The verdict names at most this many bins each way, the clearest first (the table has them all).
VERDICT_BINS = 5
#: Sigma, in cm, of the blur whose residue is the window's fine-scale (thread) contrast.
CONTRAST_SIGMA_CM = 0.1
FFT = "fft"
FAMILIES = ("v", "h")

#: A model's answer to a request (a DataFrame of ``image`` and ``px_per_cm``): ``density_v``, ``density_h``.
Predict = Callable[[pd.DataFrame], pd.DataFrame]

#: Numeric difficulty factors: the sample column and the bin edges (the last bin is open-ended).
NUMERIC_FACTORS: dict[str, tuple[str, tuple[float, ...]]] = {
    "density (threads/cm)": ("truth", (0.0, 10.0, 15.0, 20.0, 27.0)),
    "fine-scale contrast (% of full scale)": ("contrast_pct", (0.0, 2.0, 4.0, 8.0)),
    "occluded share": ("occluded_share", (0.0, 0.01, 0.2, 0.5)),
    "irregularity (rel. std of spacing)": ("irregularity", (0.0, 0.03, 0.05, 0.08)),
    "source resolution (px/cm)": ("source_px_per_cm", (0.0, 150.0, 200.0, 300.0)),
    "blur transfer at the thread frequency": ("blur_transfer", (0.0, 0.1, 0.5, 0.9)),
}
#: Categorical factors: the style axes of the generator.
STYLE_FACTORS = {"weave": "weave", "thread profile": "profile", "imaging": "imaging"}


@dataclass(frozen=True, eq=False)
class Windows:
    """The test windows: their images (raw, as stored), resolution and what is known of each."""

    images: tuple[np.ndarray, ...]
    px_per_cm: float
    #: One row per window: painting_id, patch_id, density_v/h (truth), weave, profile, imaging,
    #: source_px_per_cm, occluded_share, irregularity_v/h, contrast_pct, blur_sigma_cm, artefacts.
    table: pd.DataFrame
    mix: str
    seed: int


@functools.lru_cache(maxsize=2)
def make_windows(
    n_windows: int = DEFAULT_WINDOWS,
    n_paintings: int | None = None,
    seed: int = HELD_OUT_SEED,
    mix: str = synthetic.HELD_OUT_MIX.name,
) -> Windows:
    """The test windows (cached: an analysis scores several models on the same ones); ``n_paintings`` ``None``:
    :data:`DEFAULT_PAINTINGS` per :data:`DEFAULT_WINDOWS` windows.

    Raises:
        ValueError: naming the argument: too few windows for the paintings, or an unknown mix.
    """
    if n_paintings is None:
        n_paintings = max(1, round(n_windows * DEFAULT_PAINTINGS / DEFAULT_WINDOWS))
    if n_paintings < 1 or n_windows < n_paintings:
        raise ValueError(f"need 1 <= n_paintings <= n_windows, got n_paintings={n_paintings}, n_windows={n_windows}")
    if mix not in synthetic.STYLE_MIXES:
        raise ValueError(f"mix must be one of {sorted(synthetic.STYLE_MIXES)}, got {mix!r}")
    px_per_cm = synthetic.DEFAULT_PX_PER_CM
    side = round(WINDOW_CM * px_per_cm)
    images, rows = [], []
    for patch in synthetic.generate_corpus(
        n_paintings, n_windows, seed, size_px=side, px_per_cm=px_per_cm, mix=synthetic.STYLE_MIXES[mix]
    ):
        assert patch.style is not None and patch.canvas is not None and patch.imaging is not None
        images.append(patch.image)
        rows.append(
            {
                "painting_id": patch.painting_id,
                "patch_id": patch.patch_id,
                "density_v": patch.density_v,
                "density_h": patch.density_h,
                "weave": patch.style.weave,
                "profile": patch.style.profile,
                "imaging": patch.style.imaging,
                "source_px_per_cm": patch.style.source_px_per_cm,
                "occluded_share": patch.occluded_share,
                "irregularity_v": patch.canvas.irregularity_v,
                "irregularity_h": patch.canvas.irregularity_h,
                "contrast_pct": fine_contrast(patch.image, px_per_cm, full_scale(patch.image, patch.imaging)),
                "blur_sigma_cm": patch.imaging.blur_sigma_px / patch.style.source_px_per_cm,
                "artefacts": "+".join(patch.artefacts),
            }
        )
    return Windows(tuple(images), px_per_cm, pd.DataFrame(rows), mix, seed)


def full_scale(image: np.ndarray, imaging: synthetic.ImagingParams) -> float:
    """The largest level the image's detector stores: 255 for 8 bit, the imaging's 16-bit maximum otherwise."""
    return 255.0 if image.dtype == np.uint8 else float(imaging.max_level_16bit)


def fine_contrast(image: np.ndarray, px_per_cm: float, scale: float) -> float:
    """The window's thread-scale contrast: the standard deviation of the image minus its
    :data:`CONTRAST_SIGMA_CM` blur (paint and exposure gradients removed; noise stays), in % of ``scale``, over
    the window less a margin of one sigma (where the blur would see past the edge)."""
    pixels = image.astype(np.float32)
    sigma = CONTRAST_SIGMA_CM * px_per_cm
    residue = pixels - cv2.GaussianBlur(pixels, (0, 0), sigmaX=sigma)
    margin = round(sigma) if min(image.shape) > 4 * sigma else 0
    inner = residue[margin : residue.shape[0] - margin, margin : residue.shape[1] - margin]
    return float(100.0 * np.std(inner) / scale)


def blur_transfer(sigma_cm: ArrayLike, density: ArrayLike) -> np.ndarray:
    """How much of the threads' modulation the imaging blur leaves: the Gaussian's transfer function
    ``exp(-2 pi^2 sigma^2 f^2)`` at the thread frequency ``f`` (threads/cm), ``sigma`` in cm. Near 0 the weave is
    not in the image at all, whatever a method does."""
    sigma, frequency = np.asarray(sigma_cm, np.float64), np.asarray(density, np.float64)
    return np.asarray(np.exp(-2.0 * math.pi**2 * (sigma * frequency) ** 2))


# ----------------------------------------------------------------------------------------------- methods


def fft_estimates(windows: Windows) -> np.ndarray:
    """``(N, 2)`` densities (vertical, horizontal) by the FFT counter; NaN where it cannot count a window."""
    estimates = np.full((len(windows.images), 2), np.nan)
    for index, image in enumerate(windows.images):
        try:
            measured = fft_measure(image, windows.px_per_cm)
        except ValueError:  # CountingError included: the FFT failed on this window, which the scores report
            continue
        estimates[index] = measured.vertical, measured.horizontal
    return estimates


def cnn_estimates(predict: Predict, windows: Windows, *, batch: int = 256, label: str = "model") -> np.ndarray:
    """``(N, 2)`` densities (vertical, horizontal) by a model, through its own preprocessing."""
    estimates = np.full((len(windows.images), 2), np.nan)
    with Ticker("held_out", f"{label} windows", len(windows.images), every_s=10.0) as ticker:
        for first in range(0, len(windows.images), batch):
            chunk = list(windows.images[first : first + batch])
            answer = predict(pd.DataFrame({"image": chunk, "px_per_cm": windows.px_per_cm}))
            estimates[first : first + len(chunk), 0] = np.asarray(answer["density_v"], dtype=np.float64)
            estimates[first : first + len(chunk), 1] = np.asarray(answer["density_h"], dtype=np.float64)
            ticker.advance(len(chunk))
    return estimates


def samples(windows: Windows, estimates: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per window and family: its truth, difficulty, style and each method's estimate (``est_<method>``)
    and relative error (``err_<method>``)."""
    frames = []
    for column, family in enumerate(FAMILIES):
        table = windows.table
        frame = pd.DataFrame(
            {
                "patch_id": table["patch_id"],
                "family": family,
                "truth": table[f"density_{family}"],
                "irregularity": table[f"irregularity_{family}"],
                "blur_transfer": blur_transfer(table["blur_sigma_cm"], table[f"density_{family}"]),
                **{name: table[name] for name in ("contrast_pct", "occluded_share", "source_px_per_cm")},
                **{name: table[name] for name in STYLE_FACTORS.values()},
            }
        )
        for method, values in estimates.items():
            frame[f"est_{method}"] = values[:, column]
            frame[f"err_{method}"] = np.abs(values[:, column] - frame["truth"]) / frame["truth"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def common(sample_table: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """The samples every method measured: the comparison is on the same windows."""
    measured = np.logical_and.reduce([np.isfinite(sample_table[f"err_{m}"]) for m in methods])
    return sample_table[measured]


def by_difficulty(sample_table: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Rows ``factor, bin, n`` and each method's normalised MAE (``nmae_<method>``) per difficulty bin, on the
    samples every method measured; ``all`` first."""
    shared = common(sample_table, methods)
    rows = [_row("all", "all", shared, methods)]
    for factor, (column, edges) in NUMERIC_FACTORS.items():
        values = shared[column].to_numpy(dtype=np.float64)
        for low, high in zip(edges, (*edges[1:], math.inf), strict=True):
            inside = shared[(values >= low) & (values < high)]
            if len(inside):
                rows.append(_row(factor, _bin_name(low, high), inside, methods))
    for factor, column in STYLE_FACTORS.items():
        for value, inside in shared.groupby(column, sort=True):
            rows.append(_row(factor, str(value), inside, methods))
    return pd.DataFrame(rows)


def _row(factor: str, name: str, inside: pd.DataFrame, methods: Sequence[str]) -> dict[str, object]:
    return {
        "factor": factor,
        "bin": name,
        "n": len(inside),
        **{f"nmae_{m}": float(inside[f"err_{m}"].mean()) if len(inside) else math.nan for m in methods},
    }


def _bin_name(low: float, high: float) -> str:
    if math.isinf(high):
        return f">= {low:g}"
    return f"{low:g}-{high:g}" if low > 0 else f"< {high:g}"


def verdict(table: pd.DataFrame, method: str) -> str:
    """One line: ``method``'s overall nMAE against the FFT's, and the bins (of at least :data:`MIN_BIN` samples)
    where it beats the FFT and where it loses."""
    overall = table[table["factor"] == "all"].iloc[0]
    model, fft = float(overall[f"nmae_{method}"]), float(overall[f"nmae_{FFT}"])
    word = "beats" if model < fft else "loses to"
    bins = table[(table["factor"] != "all") & (table["n"] >= MIN_BIN)]
    ratio = (bins[f"nmae_{method}"] / bins[f"nmae_{FFT}"]).to_numpy()
    named = [f"{factor} {name} ({r:.2f}x)" for factor, name, r in zip(bins["factor"], bins["bin"], ratio, strict=True)]
    wins = [named[i] for i in np.argsort(ratio, kind="stable") if ratio[i] < 1]
    losses = [named[i] for i in np.argsort(-ratio, kind="stable") if ratio[i] >= 1]
    return (
        f"{method}: nMAE {model:.4f} vs FFT {fft:.4f} ({model / fft:.2f}x) on {int(overall['n'])} held-out samples: "
        f"{word} the FFT. Better in: {_listed(wins)}. Worse in: {_listed(losses)}."
    )


def _listed(bins: list[str], most: int = VERDICT_BINS) -> str:
    """The first ``most`` of ``bins`` (the clearest first), and how many more there are."""
    if not bins:
        return "no bin"
    more = f" and {len(bins) - most} more" if len(bins) > most else ""
    return ", ".join(bins[:most]) + more


# ----------------------------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class Result:
    """The held-out test of some models: every sample, the table by difficulty and a verdict per model."""

    windows: Windows
    samples: pd.DataFrame
    table: pd.DataFrame
    #: The models' names, in the order given (the FFT is not one of them).
    models: tuple[str, ...]
    #: Windows the FFT could not count (out of ``len(windows.images)``).
    fft_failed: int

    @property
    def methods(self) -> tuple[str, ...]:
        return (*self.models, FFT)

    def overall(self) -> dict[str, float]:
        """Each method's nMAE over all shared samples."""
        row = self.table[self.table["factor"] == "all"].iloc[0]
        return {method: float(row[f"nmae_{method}"]) for method in self.methods}

    def lines(self) -> list[str]:
        return [verdict(self.table, model) for model in self.models]

    def note(self) -> str:
        what = (
            f"Held-out styles ({self.windows.mix} mix: styles training never drew)"
            if self.windows.mix == synthetic.HELD_OUT_MIX.name
            else f"The {self.windows.mix} mix's styles (not held out)"
        )
        return (
            f"{what}, {len(self.windows.images)} windows "
            f"of {WINDOW_CM:g} cm on their own seed ({self.windows.seed}), both thread families; "
            f"the FFT could not count {self.fft_failed} of them, and every method is scored on the samples all "
            "measured."
        )


def evaluate(
    models: Mapping[str, Predict],
    windows: Windows | None = None,
    *,
    fft: np.ndarray | None = None,
) -> Result:
    """Score ``models`` (name -> predict) and the FFT on ``windows`` (default: :func:`make_windows`); ``fft``:
    the FFT's estimates when already made for these windows."""
    windows = windows if windows is not None else make_windows()
    if FFT in models:
        raise ValueError(f"a model cannot be called {FFT!r}: that is the FFT counter's column")
    fft = fft if fft is not None else fft_estimates(windows)
    estimates = {name: cnn_estimates(predict, windows, label=name) for name, predict in models.items()}
    estimates[FFT] = fft
    table = samples(windows, estimates)
    names = tuple(models)
    failed = int(np.any(~np.isfinite(fft), axis=1).sum())
    return Result(windows, table, by_difficulty(table, (*names, FFT)), names, failed)


def write(result: Result, out_dir: Path) -> list[Path]:
    """``held_out_samples.csv``, ``held_out_by_difficulty.csv``, ``held_out.md`` and ``held_out.png`` in
    ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in ("held_out_samples.csv", "held_out_by_difficulty.csv")]
    result.samples.to_csv(paths[0], index=False)
    result.table.to_csv(paths[1], index=False, float_format="%.5f")
    markdown = out_dir / "held_out.md"
    markdown.write_text(markdown_text(result))
    figure_path = out_dir / "held_out.png"
    figure(result).savefig(figure_path, dpi=100)
    return [*paths, markdown, figure_path]


def markdown_text(result: Result) -> str:
    return "\n".join(["## Held-out styles", "", result.note(), "", *result.lines(), "", table_markdown(result)])


def table_markdown(result: Result) -> str:
    """The table by difficulty: one row per bin, each method's nMAE."""
    header = "| factor | bin | n | " + " | ".join(f"nMAE {m}" for m in result.methods) + " |"
    rule = "| --- | --- | ---: | " + " | ".join("---:" for _ in result.methods) + " |"
    body = [
        f"| {r['factor']} | {r['bin']} | {r['n']} | "
        + " | ".join(f"{r[f'nmae_{m}']:.4f}" for m in result.methods)
        + " |"
        for r in result.table.to_dict("records")
    ]
    return "\n".join([header, rule, *body, ""])


def figure(result: Result) -> Figure:
    """One panel per difficulty factor: each method's nMAE per bin (grouped bars, the FFT in grey)."""
    from matplotlib.figure import Figure

    factors = [f for f in dict.fromkeys(result.table["factor"]) if f != "all"]
    columns = 3
    rows = math.ceil(len(factors) / columns)
    fig = Figure(figsize=(5.2 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    methods = result.methods
    width = 0.8 / len(methods)
    colours = {FFT: "0.6"}
    for ax, factor in zip(axes, factors, strict=False):
        part = result.table[result.table["factor"] == factor]
        positions = np.arange(len(part))
        for offset, method in enumerate(methods):
            ax.bar(
                positions + (offset - (len(methods) - 1) / 2) * width,
                part[f"nmae_{method}"],
                width,
                label=method,
                color=colours.get(method),
            )
        ax.set_xticks(positions, [f"{b}\n(n={n})" for b, n in zip(part["bin"], part["n"], strict=True)], fontsize=7)
        ax.set_title(factor, fontsize=9)
        ax.set_ylabel("normalised MAE", fontsize=8)
    for ax in axes[len(factors) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    overall = ", ".join(f"{m} {v:.4f}" for m, v in result.overall().items())
    fig.suptitle(f"Held-out styles: normalised MAE by difficulty (overall: {overall})", fontsize=10)
    return fig


def held_out_test(
    models: Mapping[str, str],
    out_dir: Path,
    n_windows: int = DEFAULT_WINDOWS,
    *,
    others: Mapping[str, str] | None = None,
) -> HeldOut:
    """The analysis' held-out test (``Workload.held_out``): each model (group -> URI) and the FFT on ``n_windows``
    windows, written into ``out_dir``; ``others`` (name -> URI: the groups' other seeds) are scored on the same
    windows, for ``HeldOut.scores`` only (one that does not load is left out, with a warning).

    Raises:
        ValueError: naming a model URI of ``models`` that does not load or does not take raw patches.
    """
    from thread_bench.workloads.thread_density.weave_map import resolve_model

    loaded = {group: resolve_model(uri).predict for group, uri in models.items()}
    windows = make_windows(n_windows)
    fft = fft_estimates(windows)
    result = evaluate(loaded, windows, fft=fft)
    paths = write(result, out_dir)
    overall = result.overall()
    scores = {group: overall[group] for group in result.models}
    for name, uri in (others or {}).items():
        try:
            predict = resolve_model(uri).predict
        except ValueError as error:
            log.warning("held-out styles: %s left out: %s", name, error)
            continue
        scores[name] = evaluate({name: predict}, windows, fft=fft).overall()[name]
    metrics = {
        group: {
            keys.HELD_OUT_TEST_LOSS: overall[group],
            keys.HELD_OUT_FFT_TEST_LOSS: overall[FFT],
            keys.HELD_OUT_RATIO_TO_FFT: overall[group] / overall[FFT],
        }
        for group in result.models
    }
    return HeldOut(
        note=result.note(),
        lines=tuple(result.lines()),
        metrics=metrics,
        markdown=table_markdown(result),
        files=tuple(path.name for path in paths),
        scores=scores,
        baseline_score=overall[FFT],
        score_name="held-out nMAE",
        baseline_name="the FFT",
    )


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m thread_bench.workloads.thread_density.held_out",
        description="Score thread-density models and the FFT on canvases of styles training never saw.",
    )
    parser.add_argument(
        "--model_uri",
        action="append",
        default=[],
        help="a logged thread-density model (repeat for several; default: the champion, else the shipped model)",
    )
    parser.add_argument("--windows", default="", help=f"test windows, 1 cm each (default: {DEFAULT_WINDOWS})")
    parser.add_argument(
        "--paintings",
        default="",
        help=f"paintings they are spread over (default: {DEFAULT_PAINTINGS} per {DEFAULT_WINDOWS} windows)",
    )
    parser.add_argument(
        "--styles",
        default="",
        help=f"the style mix of the test canvases, one of {', '.join(sorted(synthetic.STYLE_MIXES))} (default: "
        f"{synthetic.HELD_OUT_MIX.name}; {synthetic.TRAINING_MIX.name} gives an in-distribution comparison)",
    )
    parser.add_argument("--out", default="", help=f"where the tables and figure go (default: {DEFAULT_OUT})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from thread_bench.workloads.thread_density.weave_map import resolve_model

    try:
        n_windows = _count(args.windows, DEFAULT_WINDOWS, "--windows") or DEFAULT_WINDOWS
        n_paintings = _count(args.paintings, None, "--paintings")
        windows = make_windows(n_windows, n_paintings, HELD_OUT_SEED, args.styles or synthetic.HELD_OUT_MIX.name)
        chosen = [resolve_model(uri) for uri in (args.model_uri or [""])]
    except ValueError as error:
        print(f"held_out: {error}", file=sys.stderr)
        return 2
    names = [f"model{index + 1}" if len(chosen) > 1 else "cnn" for index in range(len(chosen))]
    for name, model in zip(names, chosen, strict=True):
        print(f"held_out: {name} = {model.uri} ({model.chosen})")
    import matplotlib

    matplotlib.use("Agg")
    result = evaluate({name: model.predict for name, model in zip(names, chosen, strict=True)}, windows)
    paths = write(result, Path(args.out or DEFAULT_OUT))
    print(result.note())
    for line in result.lines():
        print(line)
    print(f"held_out: wrote {', '.join(str(p) for p in paths)}")
    return 0


def _count(text: str, default: int | None, option: str) -> int | None:
    """``text`` as a positive count (``""``, MLflow's unset parameter: ``default``); ValueError naming ``option``."""
    if text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{option} must be a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
