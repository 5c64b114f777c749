"""How well ``weave_compare`` tells canvases cut from one bolt from canvases of two bolts, on rendered radiographs.

    python benchmarks/bolt_matching.py                    # 20 same-bolt and 20 different-bolt pairs, 20 x 14 cm
    python benchmarks/bolt_matching.py --pairs 30 --model_uri models:/thread-density@champion

Each pair is two synthetic canvases (``canvas.same_bolt_pair`` / ``canvas.different_bolt_pair``: the same layout,
overlapping by at least 8 cm across the bolt, the second mounted reversed 40 % of the time; a different-bolt pair's
bolts have the same nominal densities, so only the stripes can tell them apart). Both are rendered and mapped
(``weave.measure``: the CNN through the model's pyfunc, and the FFT), and compared three times: on the exact truth
(the ceiling: what the stripes themselves allow), on the FFT's map and on the CNN's. Printed per method: the ROC
AUC of the correlation and of -p over all pairs, how many pairs of each kind were called one bolt (the verdict's
p <= 0.01 and r >= 0.6), and for the same-bolt pairs how often the best shift and orientation were the true ones.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench import cli
from thread_bench.measure import cpu_model


def main() -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs of each kind (default: %(default)s)")
    parser.add_argument("--width_cm", type=float, default=20.0)
    parser.add_argument("--height_cm", type=float, default=14.0)
    parser.add_argument("--px_per_cm", type=float, default=100.0)
    parser.add_argument("--model_uri", default="shipped")
    args = parser.parse_args()

    from thread_bench.workloads.thread_density import canvas, weave, weave_map
    from thread_bench.workloads.thread_density import weave_compare as compare

    model = weave_map.resolve_model(args.model_uri)
    size = {"width_cm": args.width_cm, "height_cm": args.height_cm, "px_per_cm": args.px_per_cm}
    methods = ("true", "fft", "cnn")
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bolt-matching-") as scratch:
        for seed in range(args.pairs):
            for same, make in ((True, canvas.same_bolt_pair), (False, canvas.different_bolt_pair)):
                specs = make(seed, **size)
                profiles: dict[str, list[Any]] = {method: [] for method in methods}
                for index, spec in enumerate(specs):
                    rendered = canvas.render_canvas(spec)
                    grid = weave.make_grid(rendered.image.shape, spec.px_per_cm)
                    mapped = weave.measure(rendered.image, grid, model.predict, progress=False)
                    weave.add_truth(mapped, rendered)  # type: ignore[arg-type]  # a WholeCanvas has the truth's fields
                    out = Path(scratch) / f"{seed}-{same}-{index}"
                    weave.write(mapped, out, {}, {})
                    for method in methods:
                        read = compare.parse_weave_map(out / weave.CSV_NAME, method=method)
                        profiles[method].append(compare.warp_profile(read, "v"))
                first, second = specs
                true_shift = (second.bolt_offset_cm or 0.0) - (first.bolt_offset_cm or 0.0)
                for method in methods:
                    result = compare.compare_profiles(*profiles[method])
                    records.append(
                        {
                            "seed": seed,
                            "same": same,
                            "method": method,
                            "correlation": result.correlation,
                            "p_value": result.p_value,
                            "match": result.p_value <= compare.MATCH_P_VALUE
                            and result.correlation >= compare.MATCH_CORRELATION,
                            "right_alignment": same
                            and result.reversed == second.reversed
                            and (second.reversed or abs(result.shift_cm - true_shift) <= 0.5),
                        }
                    )
            print(f"pair {seed + 1}/{args.pairs} done, {time.perf_counter() - started:.0f} s", flush=True)

    print(
        f"\nbolt matching on {cpu_model()} ({os.cpu_count()} CPUs): {args.pairs} same-bolt and {args.pairs} "
        f"different-bolt pairs of {args.width_cm:g} x {args.height_cm:g} cm canvases at {args.px_per_cm:g} px/cm, "
        f"CNN {model.uri}; {time.perf_counter() - started:.0f} s"
    )
    print("| maps | AUC (r) | AUC (-p) | same-bolt pairs called one bolt | different-bolt pairs called one bolt | "
          "same-bolt pairs aligned right |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        same = [r for r in rows if r["same"]]
        different = [r for r in rows if not r["same"]]
        auc_r = compare.roc_auc([r["correlation"] for r in same], [r["correlation"] for r in different])
        auc_p = compare.roc_auc([-r["p_value"] for r in same], [-r["p_value"] for r in different])
        print(
            f"| {method} | {auc_r:.3f} | {auc_p:.3f} | {sum(r['match'] for r in same)}/{len(same)} | "
            f"{sum(r['match'] for r in different)}/{len(different)} | "
            f"{sum(r['right_alignment'] for r in same)}/{len(same)} |"
        )
    medians = {m: np.median([r["p_value"] for r in records if r["method"] == m and r["same"]]) for m in methods}
    print("median p of the same-bolt pairs: " + ", ".join(f"{m} {v:.3f}" for m, v in medians.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
