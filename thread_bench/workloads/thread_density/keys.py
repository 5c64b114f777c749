"""The thread-density workload's MLflow names: its metrics, params and artifacts beside the shared ones of
:mod:`thread_bench.tracking` (which knows no workload). Training, analysis and tests import them from here."""

from __future__ import annotations

#: The best model re-scored on the validation split, and what predicting the training mean scores there.
VAL_MAE_THREADS_PER_CM = "val_mae_threads_per_cm"
BASELINE_VAL_LOSS = "baseline_val_loss"
BASELINE_VAL_MAE_THREADS_PER_CM = "baseline_val_mae_threads_per_cm"
TEST_MAE_THREADS_PER_CM = "test_mae_threads_per_cm"
FFT_TEST_LOSS = "fft_test_loss"
FFT_TEST_MAE_THREADS_PER_CM = "fft_test_mae_threads_per_cm"
FFT_FAILED_SUBPATCHES = "fft_failed_subpatches"
#: The held-out-style test (:mod:`.held_out`): a model's normalised MAE on canvases of styles training never saw,
#: the FFT counter's on the same samples, and their ratio (below 1: the model beats the FFT).
HELD_OUT_TEST_LOSS = "held_out_test_loss"
HELD_OUT_FFT_TEST_LOSS = "held_out_fft_test_loss"
HELD_OUT_RATIO_TO_FFT = "held_out_ratio_to_fft"
PREP_SKIPPED_PATCHES = "skipped_patches"
PREP_SKIPPED_SUBPATCHES = "skipped_subpatches"
#: Rows whose density_v/density_h in index.csv differ from the counted density (listed in the manifest).
PREP_DENSITY_MISMATCHES = "density_mismatches"

# Weave comparison runs (``thread_bench.weave_compare``, experiment ``tracking.WEAVE_EXPERIMENT``): do two weave maps
# share the warp's density stripes (cut from one bolt)? Params, the best alignment's metrics and the artifacts.
PARAM_MAP_A = "map_a"
PARAM_MAP_B = "map_b"
#: Which densities of the maps are compared: ``cnn``, ``fft`` or ``true`` (the weave map's column suffix).
PARAM_METHOD = "method"
#: Which thread family is the warp in each map: ``v`` (vertical threads) or ``h`` (the canvas mounted turned).
PARAM_WARP_A = "warp_a"
PARAM_WARP_B = "warp_b"
PARAM_MIN_OVERLAP_CM = "min_overlap_cm"
#: The step both warp profiles are compared at (the coarser of the two maps').
PARAM_PROFILE_STEP_CM = "profile_step_cm"
PARAM_N_SURROGATES = "n_surrogates"
#: Pearson correlation of the two warp profiles at the best shift and orientation.
CORRELATION = "correlation"
#: Where b's first profile column (its last when reversed) lies along a's profile, from a's first column.
SHIFT_CM = "shift_cm"
OVERLAP_CM = "overlap_cm"
#: 1 when b's profile matched reversed (one canvas mounted the other way round), else 0.
REVERSED = "reversed"
#: The share of phase-randomised surrogates of b whose best alignment is as strong as the observed one (+1 corrected).
P_VALUE = "p_value"
MEAN_WARP_DENSITY_A_THREADS_PER_CM = "mean_warp_density_a_threads_per_cm"
MEAN_WARP_DENSITY_B_THREADS_PER_CM = "mean_warp_density_b_threads_per_cm"
#: a's mean warp density minus b's.
WARP_DENSITY_DIFFERENCE_THREADS_PER_CM = "warp_density_difference_threads_per_cm"
ARTIFACT_WEAVE_COMPARE_FIGURE = "weave_compare.png"
ARTIFACT_WEAVE_COMPARE_JSON = "weave_compare.json"
