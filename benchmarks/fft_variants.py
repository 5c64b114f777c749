"""Is the FFT baseline as strong as it can be? The spectral counter and its variants on the same windows.

    python benchmarks/fft_variants.py                      # 480 held-out windows and 480 of the training mix
    python benchmarks/fft_variants.py --windows 120        # quicker

Beating a weakened baseline is worthless, so every knob of ``counting.fft_measure`` is varied one at a time
around the project's default (:data:`counting.DEFAULT_FFT`): the window (Hann or none), the zero padding, the
sector around each axis, the whitening exponent of the coarse search, the second-harmonic check and the sub-bin
refinement (parabola through the log power, or the power centroid). Each variant measures the same windows of
``held_out.make_windows`` (held-out styles, and the training mix for comparison); printed: the normalised MAE over
both thread families, the windows it could not count, its median error and its time per window. The default is
the first row; a variant that beats it on both mixes is a reason to change the default.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import pandas as pd

from thread_bench import cli
from thread_bench.measure import cpu_model
from thread_bench.workloads.thread_density import held_out, synthetic
from thread_bench.workloads.thread_density.counting import DEFAULT_FFT, FftSettings, fft_measure

VARIANTS: dict[str, FftSettings] = {
    "default": DEFAULT_FFT,
    "no window": dataclasses.replace(DEFAULT_FFT, window="none"),
    "padding 1x": dataclasses.replace(DEFAULT_FFT, padding=1),
    "padding 4x": dataclasses.replace(DEFAULT_FFT, padding=4),
    "sector 6 deg": dataclasses.replace(DEFAULT_FFT, sector_half_angle_deg=6.0),
    "sector 20 deg": dataclasses.replace(DEFAULT_FFT, sector_half_angle_deg=20.0),
    "whitening 0": dataclasses.replace(DEFAULT_FFT, whitening_exponent=0.0),
    "whitening 0.5": dataclasses.replace(DEFAULT_FFT, whitening_exponent=0.5),
    "whitening 1.5": dataclasses.replace(DEFAULT_FFT, whitening_exponent=1.5),
    "whitening 2": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.0),
    "no harmonic check": dataclasses.replace(DEFAULT_FFT, harmonic_ratio=1e9),
    "harmonic ratio 0.3": dataclasses.replace(DEFAULT_FFT, harmonic_ratio=0.3),
    "harmonic ratio 0.7": dataclasses.replace(DEFAULT_FFT, harmonic_ratio=0.7),
    "centroid refinement": dataclasses.replace(DEFAULT_FFT, refinement="centroid"),
    "whitening 2.5": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.5),
    "whitening 3": dataclasses.replace(DEFAULT_FFT, whitening_exponent=3.0),
    "w2 + no harmonic": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.0, harmonic_ratio=1e9),
    "w2 + no window": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.0, window="none"),
    "w2 + no window + no harmonic": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="none", harmonic_ratio=1e9
    ),
    "w2 + harmonic 0.7": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.0, harmonic_ratio=0.7),
    "w2 + sector 6": dataclasses.replace(DEFAULT_FFT, whitening_exponent=2.0, sector_half_angle_deg=6.0),
    "w2 + no window + sector 6 + no harmonic": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="none", sector_half_angle_deg=6.0, harmonic_ratio=1e9
    ),
    "tukey 0.25": dataclasses.replace(DEFAULT_FFT, window="tukey", tukey_alpha=0.25),
    "tukey 0.5": dataclasses.replace(DEFAULT_FFT, window="tukey", tukey_alpha=0.5),
    "w2 + tukey 0.1 + no harmonic": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="tukey", tukey_alpha=0.1, harmonic_ratio=1e9
    ),
    "w2 + tukey 0.25 + no harmonic": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="tukey", tukey_alpha=0.25, harmonic_ratio=1e9
    ),
    "w2.5 + no window + no harmonic": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.5, window="none", harmonic_ratio=1e9
    ),
    "w2 + no window + no harmonic + padding 4x": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="none", harmonic_ratio=1e9, padding=4
    ),
    "w2 + no window + no harmonic + centroid": dataclasses.replace(
        DEFAULT_FFT, whitening_exponent=2.0, window="none", harmonic_ratio=1e9, refinement="centroid"
    ),
}


def score(windows: held_out.Windows, settings: FftSettings) -> dict[str, float]:
    """The variant's nMAE over both families of every window it counted, failures, median error, ms per window."""
    truth = np.column_stack([windows.table["density_v"], windows.table["density_h"]])
    estimates = np.full(truth.shape, np.nan)
    started = time.perf_counter()
    for index, image in enumerate(windows.images):
        try:
            measured = fft_measure(image, windows.px_per_cm, settings)
        except ValueError:
            continue
        estimates[index] = measured.vertical, measured.horizontal
    elapsed = time.perf_counter() - started
    errors = np.abs(estimates - truth) / truth
    counted = np.isfinite(errors)
    return {
        "nmae": float(errors[counted].mean()),
        "failed": int((~counted.all(axis=1)).sum()),
        "median": float(np.median(errors[counted])),
        "ms_per_window": 1000.0 * elapsed / len(windows.images),
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=held_out.DEFAULT_WINDOWS)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    mixes = (synthetic.HELD_OUT_MIX.name, synthetic.TRAINING_MIX.name, synthetic.CLASSIC_MIX.name)
    windows = {mix: held_out.make_windows(args.windows, None, held_out.HELD_OUT_SEED, mix) for mix in mixes}
    rows = []
    for name in chosen:
        row: dict[str, object] = {"variant": name}
        for mix in mixes:
            scores = score(windows[mix], VARIANTS[name])
            for key in ("nmae", "median", "failed"):
                row[f"{mix} {key}"] = scores[key]
            row[f"{mix} ms"] = scores["ms_per_window"]
        rows.append(row)
    print(f"FFT variants on {args.windows} windows per mix (both families); CPU: {cpu_model()}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
