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
PREP_SKIPPED_PATCHES = "skipped_patches"
PREP_SKIPPED_SUBPATCHES = "skipped_subpatches"
#: Rows whose density_v/density_h in index.csv differ from the counted density (listed in the manifest).
PREP_DENSITY_MISMATCHES = "density_mismatches"
