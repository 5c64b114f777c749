"""``cpu_isa``: the caps' settings, refusals that name what is missing, and what a run reports."""

from __future__ import annotations

import pytest

from thread_bench import cpu_isa
from thread_bench.config import TrainConfig

pytestmark = pytest.mark.unit

AVX2_ONLY = frozenset({"sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"})


def test_native_sets_nothing() -> None:
    assert cpu_isa.environment(cpu_isa.NATIVE, {}) == {}


def test_a_cap_sets_every_library_and_keeps_other_xla_flags() -> None:
    current = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX512"}
    assert cpu_isa.environment("avx2", current) == {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX2",
    }
    assert cpu_isa.environment("sse41", {})["ATEN_CPU_CAPABILITY"] == "default"


def test_an_unknown_setting_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"cpu_isa must be one of \['native', 'avx512', 'avx2', 'sse41'\], got 'avx3'"):
        TrainConfig(cpu_isa="avx3")


def test_a_cap_the_processor_lacks_is_refused_naming_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_isa, "processor_flags", lambda: AVX2_ONLY)
    monkeypatch.setattr(cpu_isa, "is_x86", lambda: True)
    assert cpu_isa.available_caps() == ["avx2", "sse41"] and cpu_isa.native_level() == "avx2"
    cpu_isa.check_available("avx2")
    with pytest.raises(
        ValueError, match=r"cpu_isa=avx512: this processor lacks avx512f, avx512bw.*\['native', 'avx2', 'sse41'\]"
    ):
        cpu_isa.check_available("avx512")


def test_caps_are_refused_off_x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_isa, "is_x86", lambda: False)
    cpu_isa.check_available(cpu_isa.NATIVE)
    with pytest.raises(ValueError, match="caps x86-64 kernels"):
        cpu_isa.check_available("avx2")


def test_a_cap_is_refused_where_a_framework_already_started_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch  # noqa: F401  (started: the cap would be read too late)

    for name in cpu_isa.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    cpu_isa.check_can_apply(cpu_isa.NATIVE)
    with pytest.raises(ValueError, match=r"torch.*already started in this process.*start a fresh process"):
        cpu_isa.check_can_apply("avx2")
    for name, value in cpu_isa.environment("avx2").items():
        monkeypatch.setenv(name, value)  # set before the process started: nothing to refuse
    cpu_isa.check_can_apply("avx2")


def test_tensorflow_bf16_below_avx512_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_isa=avx2 with precision=bf16: TensorFlow"):
        cpu_isa.check_precision("avx2", "bf16", "tensorflow")
    cpu_isa.check_precision("avx512", "bf16", "tensorflow")
    cpu_isa.check_precision("avx2", "bf16", "torch")
    cpu_isa.check_precision("avx2", "fp32", "tensorflow")


def test_what_a_run_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in cpu_isa.environment("avx2", {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cpu_isa, "native_level", lambda: "avx512")
    settings = cpu_isa.in_effect()
    assert settings["ONEDNN_MAX_CPU_ISA"] == "AVX2" and settings["xla_cpu_max_isa"] == "AVX2"
    assert cpu_isa.describe().startswith("avx2, processor avx512 (oneDNN AVX2, ATen ")


@pytest.mark.parametrize(
    ("onednn", "cap"),
    [("", "native"), ("ALL", "native"), ("AVX512_CORE_AMX", "avx512"), ("AVX2_VNNI", "avx2"), ("AVX", "sse41")],
)
def test_a_cap_set_from_outside_counts(onednn: str, cap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
    assert cpu_isa.effective(cpu_isa.NATIVE) == cap
    assert cpu_isa.effective("avx2") == "avx2"  # a setting wins over the environment


AVX512 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}


@pytest.mark.parametrize(
    ("flags", "signature", "fp32", "bf16", "isa"),
    [
        (AVX2_ONLY, "AuthenticAMD 25/1/1", 32, None, "avx2"),  # Zen 3
        (AVX512 | {"avx512_bf16"}, "AuthenticAMD 25/17/1", 32, 64, "avx512"),  # Zen 4: AVX-512 in two halves
        (AVX512 | {"avx512_bf16"}, "AuthenticAMD 26/2/0", 64, 128, "avx512"),  # Zen 5: full width
        (AVX512 | {"avx512_bf16", "amx_bf16", "amx_tile"}, "GenuineIntel 6/143/8", 64, 1024, "avx512"),  # AMX
        (frozenset({"sse4_1", "sse4_2"}), "GenuineIntel 6/23/10", 16, None, "sse41"),
    ],
)
def test_the_peak_follows_the_processor(
    flags: frozenset[str], signature: str, fp32: int, bf16: int | None, isa: str
) -> None:
    from thread_bench import measure

    peak = measure.cpu_peak(flags, signature, ghz=2.0)
    assert (peak.fp32_flop_per_cycle, peak.bf16_flop_per_cycle, peak.isa) == (fp32, bf16, isa)
    assert peak.fp32_gflops(2) == pytest.approx(2.0 * fp32 * 2)
    assert peak.bf16_gflops(2) == (None if bf16 is None else pytest.approx(2.0 * bf16 * 2))
    assert signature in peak.description and f"{fp32} float32 FLOP/cycle at 2.00 GHz" in peak.basis
    if bf16 is None:
        assert "no bfloat16 instructions" in peak.basis
