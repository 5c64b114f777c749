"""The ``weave_map`` entry point: a whole radiograph in, its weave maps by the CNN and by the FFT out (:mod:`.weave`).

``python -m thread_bench.weave_map --radiograph painting.tiff --px_per_cm 100`` (or ``mlflow run . -e weave_map -P
radiograph=… -P px_per_cm=…``) measures every window of the grid, writes ``weave_map.csv``, the ``maps/*.npy``
arrays, ``grid.json``, ``weave_map.json`` and the figure ``weave_map.png`` into ``--out``, and logs them as one
MLflow run (experiment ``weave-maps``) with its settings as params and its summary as metrics.

Without ``--radiograph`` it renders the embedded synthetic canvas (:data:`.canvas.DEFAULT_CANVAS`: 24 x 18 cm at
100 px/cm, with warp stripes, a seam, cusping, nails and stretcher bars) and scores both methods against its
exact truth. Without ``--model_uri`` it uses the store's ``models:/thread-density@champion`` when there is one,
else the model shipped with the package (:data:`SHIPPED_MODEL`), saying so.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from thread_bench import cli, tracking
from thread_bench.models import pyfunc
from thread_bench.workloads.thread_density import WORKLOAD, canvas, weave

PROG = "python -m thread_bench.weave_map"
#: A model trained with the defaults (``mlflow run . -e torch_train -P seed=3``: PyTorch, the ``laptop`` profile),
#: kept as its two files; ``scripts/ship_model.py`` made it and says how (``SOURCE.json`` beside it).
SHIPPED_MODEL = Path(__file__).with_name("shipped_model")
#: Where the maps go when ``--out`` is not given: ``weave_maps/<radiograph's name>`` in the working directory.
DEFAULT_OUT_ROOT = Path("weave_maps")
#: ``--model_uri shipped`` asks for the shipped model even where the store has a champion.
SHIPPED = "shipped"
DEFAULT_CANVAS_NAME = "synthetic_canvas"


@dataclass(frozen=True)
class Model:
    """The model a map is made with: its URI (or the shipped model's folder), its pyfunc and how it was chosen."""

    uri: str
    predict: weave.Predict
    window_cm: float
    chosen: str


def resolve_model(model_uri: str) -> Model:
    """``model_uri``, or the champion, or the shipped model (module docstring).

    Raises:
        ValueError: naming ``model_uri``: it does not load, or is not a thread-density model that takes raw patches.
    """
    if model_uri == SHIPPED:
        return _shipped()
    if model_uri:
        return _model(model_uri, _load(model_uri), "given")
    name = tracking.registered_model_name(tracking.DEFAULT_EXPERIMENT)
    champion = tracking.alias_uri(name)
    try:
        mlflow.MlflowClient().get_model_version_by_alias(name, tracking.ALIAS_CHAMPION)
    except MlflowException:
        print(
            f"weave_map: no {champion} in this store (train with `mlflow run . -e torch_train` and pick the champion "
            f"with `python -m analysis`), so the model shipped with thread_bench is used: {SHIPPED_MODEL}",
            file=sys.stderr,
        )
        return _shipped()
    return _model(champion, _load(champion), "champion")


def _shipped() -> Model:
    return _model(str(SHIPPED_MODEL), pyfunc.load_files(SHIPPED_MODEL), "shipped")


def _load(uri: str) -> pyfunc.WorkloadPyfunc:
    try:
        return pyfunc.unwrap(uri)
    except MlflowException as error:
        raise ValueError(f"model_uri {uri!r} does not load: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise ValueError(f"model_uri {uri!r} does not load: {error}") from None


def _model(uri: str, wrapped: pyfunc.WorkloadPyfunc, chosen: str) -> Model:
    serving = getattr(wrapped.serving, "__name__", None)
    if serving != WORKLOAD.serving:
        what = f"serves with {serving}" if serving else "was logged before models carried their preprocessing"
        raise ValueError(f"model_uri {uri!r} is not a thread-density model that takes raw radiographs: it {what}")
    window_cm = wrapped.preprocessing.get("window_cm")
    if window_cm is None:
        raise ValueError(
            f"model_uri {uri!r}: the resolution of its training data was not known when it was logged "
            f"({wrapped.preprocessing.get('resolution_from')}), so it cannot take radiographs"
        )
    return Model(uri, lambda request: wrapped.predict(None, request), float(window_cm), chosen)


def make_map(
    radiograph: Path,
    px_per_cm: float,
    model: Model | None,
    *,
    window_cm: float = weave.WINDOW_CM,
    step_cm: float = weave.STEP_CM,
    truth: Path | None = None,
    progress: bool = True,
    scratch: Path | None = None,
) -> tuple[weave.WeaveMap, np.ndarray, dict[str, float]]:
    """The weave map of ``radiograph`` (``model`` ``None``: the FFT alone), its image and its metrics; a TIFF is
    decoded into a memory-mapped file in ``scratch`` when given (:func:`.weave.read_radiograph`)."""
    started = time.perf_counter()
    image = weave.read_radiograph(radiograph, scratch)
    read_s = time.perf_counter() - started
    grid = weave.make_grid(image.shape, px_per_cm, window_cm, step_cm)
    if model is not None and window_cm < model.window_cm * (1 - 1e-6):
        raise ValueError(f"window_cm={window_cm:g} is smaller than the model's window ({model.window_cm:g} cm)")
    expected = None
    if truth is not None:
        expected = canvas.read_truth(truth)
        weave.check_truth(expected, image.shape, grid.px_per_cm, str(truth))
    weave_map = weave.measure(image, grid, model.predict if model else None, progress=progress)
    metrics = weave.summary(weave_map)
    if expected is not None:
        weave.add_truth(weave_map, expected)
        metrics.update(weave.errors(weave_map, weave.near_edges(grid, expected)))
    metrics.update(weave_map.timings)
    metrics["read_s"] = read_s
    metrics["total_s"] = time.perf_counter() - started
    return weave_map, image, metrics


def peak_rss_gib() -> float:
    """This process' peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog=PROG,
        description="Weave maps of a whole radiograph: thread density (and angle) window by window, by the CNN and "
        "by the FFT side by side, written as CSV, .npy arrays and a figure and logged as one MLflow run. Without "
        "--radiograph: the embedded synthetic canvas, scored against its exact truth.",
    )
    parser.add_argument(
        "--radiograph", default="", help="PNG or TIFF, 8 or 16 bit, grayscale (default: the synthetic canvas)"
    )
    parser.add_argument("--px_per_cm", default="", help="its resolution, pixels per cm (required with --radiograph)")
    parser.add_argument(
        "--model_uri",
        default="",
        help="an MLflow model URI, or 'shipped' for the model shipped with thread_bench (default: "
        "models:/thread-density@champion, else the shipped model)",
    )
    parser.add_argument("--window_cm", default="", help=f"window side, cm (default: {weave.WINDOW_CM:g})")
    parser.add_argument("--step_cm", default="", help=f"window spacing, cm (default: {weave.STEP_CM:g})")
    parser.add_argument(
        "--truth", default="", help="the exact truth of a synthetic canvas (<name>_truth.npz) to score the maps against"
    )
    parser.add_argument("--out", default="", help="directory of the maps (default: weave_maps/<radiograph's name>)")
    cli.add_experiment_option(parser, tracking.WEAVE_EXPERIMENT)
    cli.add_verbose_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    status, _ = cli.guarded(parser, lambda: run(args))
    return status


def run(args: argparse.Namespace) -> str:
    """The entry point's work; returns the MLflow run id."""
    px_per_cm = _number(args.px_per_cm, "px_per_cm") if args.px_per_cm else None
    window_cm = _number(args.window_cm, "window_cm") if args.window_cm else weave.WINDOW_CM
    step_cm = _number(args.step_cm, "step_cm") if args.step_cm else weave.STEP_CM
    truth = Path(args.truth) if args.truth else None
    with tempfile.TemporaryDirectory(prefix="weave-map-") as scratch:
        if args.radiograph:
            radiograph = Path(args.radiograph)
            if px_per_cm is None:
                if truth is None:
                    raise ValueError(
                        f"px_per_cm is required with radiograph {radiograph}: its resolution, pixels per cm"
                    )
                px_per_cm = canvas.read_truth(truth).px_per_cm
            generated = None
        else:
            radiograph, truth, px_per_cm, generated = _default_canvas(Path(scratch), px_per_cm, truth)
        out = Path(args.out) if args.out else DEFAULT_OUT_ROOT / radiograph.stem
        model = resolve_model(args.model_uri)
        experiment = tracking.experiment_name(args.experiment, tracking.WEAVE_EXPERIMENT)
        tags = {tracking.TAG_ROLE: tracking.ROLE_WEAVE_MAP}
        with tracking.tracked_run(experiment, run_name=f"weave_map {radiograph.stem}", tags=tags) as active:
            settings = {
                "radiograph": str(radiograph) if generated is None else f"{generated} (synthetic, made on the fly)",
                "px_per_cm": px_per_cm,
                "model_uri": model.uri,
                "model_chosen": model.chosen,
                "window_cm": window_cm,
                "step_cm": step_cm,
                "truth": str(truth) if truth else "",
                "out": str(out),
            }
            tracking.log_params(settings)
            weave_map, image, metrics = make_map(
                radiograph, px_per_cm, model, window_cm=window_cm, step_cm=step_cm, truth=truth, scratch=Path(scratch)
            )
            metrics["rss_peak_gib"] = peak_rss_gib()
            out.mkdir(parents=True, exist_ok=True)
            weave.write(weave_map, out, metrics, settings)
            label = "the model shipped with thread_bench" if model.chosen == "shipped" else model.uri
            title = f"Weave maps of {radiograph.name} ({px_per_cm:g} px/cm; CNN: {label}; FFT: spectral peaks)"
            weave.figure(weave_map, image, title, metrics).savefig(out / weave.FIGURE_NAME, dpi=80)
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
            mlflow.log_artifacts(str(out))
            if generated is not None:
                mlflow.log_artifact(str(radiograph), "input")
            print(_report(weave_map, metrics, out, active.info.run_id))
            return str(active.info.run_id)


def _default_canvas(scratch: Path, px_per_cm: float | None, truth: Path | None) -> tuple[Path, Path, float, str]:
    spec = canvas.DEFAULT_CANVAS
    if px_per_cm is not None and not math.isclose(px_per_cm, spec.px_per_cm):
        raise ValueError(
            f"px_per_cm={px_per_cm:g} given without a radiograph: the synthetic canvas is {spec.px_per_cm:g}"
        )
    if truth is not None:
        raise ValueError(f"truth {truth} given without a radiograph: the synthetic canvas brings its own")
    print(
        f"weave_map: no radiograph given: rendering the synthetic canvas ({spec.width_cm:g} x {spec.height_cm:g} cm at "
        f"{spec.px_per_cm:g} px/cm, seed {spec.seed}) with its exact truth",
        file=sys.stderr,
        flush=True,
    )
    image_path, truth_path = canvas.write_canvas(canvas.render_canvas(spec), scratch, DEFAULT_CANVAS_NAME)
    return image_path, truth_path, spec.px_per_cm, f"canvas.DEFAULT_CANVAS, seed {spec.seed}"


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def _report(weave_map: weave.WeaveMap, metrics: dict[str, Any], out: Path, run_id: str) -> str:
    """What the command ends with: where the maps are, how many windows counted, the densities and the errors."""
    rows, cols = weave_map.grid.shape
    lines = [
        f"weave map: {rows} x {cols} windows ({metrics['n_valid']} counted; not counted: {metrics['n_blank']} blank, "
        f"{metrics['n_outside']} outside the canvas, {metrics['n_saturated']} saturated)",
        f"in {metrics['total_s']:.1f} s (CNN {metrics.get('cnn_s', 0):.1f} s, FFT {metrics['fft_s']:.1f} s), peak RSS "
        f"{metrics['rss_peak_gib']:.2f} GiB",
    ]
    table = pd.DataFrame(
        {
            "mean, threads/cm": [metrics.get(f"mean_density_{f}_{m}") for f in "vh" for m in ("cnn", "fft")],
            "MAE vs truth": [metrics.get(f"mae_{f}_{m}") for f in "vh" for m in ("cnn", "fft")],
            "MAE near edges": [metrics.get(f"mae_{f}_{m}_edge") for f in "vh" for m in ("cnn", "fft")],
        },
        index=[f"{family} {method}" for family in ("vertical", "horizontal") for method in ("CNN", "FFT")],
    ).dropna(axis=1, how="all")
    lines.append(table.to_string(float_format=lambda v: f"{v:.2f}"))
    lines.append(f"maps, CSV and figure: {out}/ ({weave.CSV_NAME}, {weave.FIGURE_NAME}); MLflow run {run_id}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
