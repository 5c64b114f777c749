"""The RegVGG architecture described once, as data (docs/DESIGN.md §3).

Both builders (``keras_model``, ``torch_model``), the weight transfer, the parameter and FLOP counters and
the micro-benchmarks read this module; a change to the architecture is one edit here, and the parity tests
prove that both frameworks followed it.

Layer names are part of the contract: Keras layers are called ``stage1_module2_conv5`` and the PyTorch
module at ``stage1.module2.conv5`` is its twin (``torch_module_path``), so weights are mapped by name, never
by list order.
"""

from __future__ import annotations

from dataclasses import dataclass

from thread_bench.models.inputs import (  # re-exported: the builders and older code read them here
    COMPUTE_DTYPES,
    INPUT_CHANNELS,
    PIXEL_VALUES,
    as_model_input,
    check_compute_dtype,
    compute_dtype,
)
from thread_bench.workloads.thread_density.config import ModelConfig

#: Kernel sizes of the three parallel branches of an inception module ('same' padding, stride 1).
KERNEL_SIZES = (3, 5, 7)
#: Inception modules per stage, and filters per branch as multiples of ``base_filters``.
STAGE_MODULES = (2, 2, 3, 3, 3)
FILTER_MULTIPLIERS = (1, 2, 4, 8, 8)
#: Side of the 2x2 max-pooling that ends each stage (floor rounding, 'valid' padding in both frameworks).
POOL_SIZE = 2
#: Units of the two hidden Dense layers per base filter (64 * 8 = 512 at the default config).
DENSE_UNITS_PER_BASE_FILTER = 64
N_HIDDEN_DENSE = 2
#: Regression outputs (the input is one grayscale channel, ``inputs.INPUT_CHANNELS``).
OUTPUTS = 1

INPUT_NAME = "image"
FLATTEN_NAME = "flatten"
#: Hidden Dense layers then the linear output layer. ``DENSE_NAMES[0]`` consumes the flattened features,
#: so its kernel is the one permuted between NHWC and NCHW flatten order.
DENSE_NAMES = ("dense1", "dense2", "output")

#: Analytic FLOPs: a multiply-add counts 2. Besides the convolutions, each conv output element costs
#: 4 more (bias, BatchNorm scale and shift in inference form, ReLU); pooling, concatenation and dropout
#: are not counted (< 0.5 % of the total).
ELEMENTWISE_FLOPS_PER_CONV_OUTPUT = 4
#: The backward pass of a layer costs about twice its forward: one convolution-sized product for the
#: gradient with respect to the input and one for the gradient with respect to the weights.
BACKWARD_FLOPS_FACTOR = 2


@dataclass(frozen=True)
class StageSpec:
    n_modules: int
    filters: int


@dataclass(frozen=True)
class ModuleSpec:
    """One inception module as it occurs in the network (stage and index are 1-based)."""

    stage: int
    index: int
    in_channels: int
    filters: int
    #: Height = width of the module's input and output feature maps, pixels.
    side: int

    @property
    def name(self) -> str:
        return f"stage{self.stage}_module{self.index}"

    @property
    def out_channels(self) -> int:
        return len(KERNEL_SIZES) * self.filters


def stages(config: ModelConfig) -> tuple[StageSpec, ...]:
    return tuple(
        StageSpec(n_modules=n, filters=config.base_filters * multiplier)
        for n, multiplier in zip(STAGE_MODULES, FILTER_MULTIPLIERS, strict=True)
    )


def modules(config: ModelConfig) -> tuple[ModuleSpec, ...]:
    """Every inception module of the network, in forward order, with its input shape."""
    result = []
    side, in_channels = config.input_size, INPUT_CHANNELS
    for stage_number, stage in enumerate(stages(config), start=1):
        for index in range(1, stage.n_modules + 1):
            result.append(ModuleSpec(stage_number, index, in_channels, stage.filters, side))
            in_channels = len(KERNEL_SIZES) * stage.filters
        side //= POOL_SIZE
    return tuple(result)


def stage_name(stage: int) -> str:
    return f"stage{stage}"


def conv_name(module_name: str, kernel_size: int) -> str:
    return f"{module_name}_conv{kernel_size}"


def batchnorm_name(module_name: str, kernel_size: int) -> str:
    return f"{module_name}_bn{kernel_size}"


def pool_name(stage: int) -> str:
    return f"{stage_name(stage)}_pool"


def dropout_name(stage: int) -> str:
    return f"{stage_name(stage)}_dropout"


def torch_module_path(layer_name: str) -> str:
    """The dotted PyTorch module path of a Keras layer name (``stage1_module2_conv5`` -> ``stage1.module2.conv5``)."""
    return layer_name.replace("_", ".")


def final_side(config: ModelConfig) -> int:
    """Side of the feature map that is flattened (200 -> 6 at the default config)."""
    side = config.input_size
    for _ in STAGE_MODULES:
        side //= POOL_SIZE
    return side


def final_channels(config: ModelConfig) -> int:
    return len(KERNEL_SIZES) * stages(config)[-1].filters


def flatten_features(config: ModelConfig) -> int:
    """6 * 6 * 192 = 6912 at the default config."""
    return final_side(config) ** 2 * final_channels(config)


def dense_units(config: ModelConfig) -> int:
    return DENSE_UNITS_PER_BASE_FILTER * config.base_filters


def dense_shapes(config: ModelConfig) -> tuple[tuple[str, int, int], ...]:
    """``(name, in_features, out_features)`` of the Dense layers, in order."""
    units = dense_units(config)
    widths = (flatten_features(config), *([units] * N_HIDDEN_DENSE), OUTPUTS)
    return tuple((name, n_in, n_out) for name, n_in, n_out in zip(DENSE_NAMES, widths[:-1], widths[1:], strict=True))


def count_parameters_analytic(config: ModelConfig) -> int:
    """Trainable parameters: conv kernels and biases, BatchNorm gamma and beta, Dense kernels and biases."""
    total = 0
    for module in modules(config):
        for kernel_size in KERNEL_SIZES:
            total += kernel_size**2 * module.in_channels * module.filters + module.filters  # conv
            total += 2 * module.filters  # BatchNorm gamma, beta (moving statistics are not trainable)
    for _, n_in, n_out in dense_shapes(config):
        total += n_in * n_out + n_out
    return total


def inception_flops(side: int, in_channels: int, filters: int, batch: int) -> int:
    """Forward FLOPs of one inception module on ``batch`` images of ``side`` x ``side`` x ``in_channels``.

    A training step (forward + backward) costs about ``(1 + BACKWARD_FLOPS_FACTOR)`` times this; without the
    gradient with respect to the input (a module fed directly by data) about 2 times.
    """
    outputs_per_branch = batch * side * side * filters
    per_output = sum(2 * in_channels * k * k for k in KERNEL_SIZES) + len(KERNEL_SIZES) * (
        ELEMENTWISE_FLOPS_PER_CONV_OUTPUT
    )
    return outputs_per_branch * per_output


def model_flops(config: ModelConfig, batch: int) -> int:
    """Forward FLOPs of the whole network (about 10.5 GFLOP per 200 x 200 image at the default config)."""
    total = sum(inception_flops(m.side, m.in_channels, m.filters, batch) for m in modules(config))
    for _, n_in, n_out in dense_shapes(config):
        total += batch * (2 * n_in * n_out + 2 * n_out)  # multiply-adds, bias, ReLU
    return total


def train_step_flops(config: ModelConfig, batch: int) -> int:
    """FLOPs of one training step: forward + backward, less the input gradient of the first module.

    Nothing needs the gradient with respect to the images, and neither framework computes it.
    """
    first = modules(config)[0]
    first_input_grad = inception_flops(first.side, first.in_channels, first.filters, batch)
    return (1 + BACKWARD_FLOPS_FACTOR) * model_flops(config, batch) - first_input_grad


__all__ = ["COMPUTE_DTYPES", "INPUT_CHANNELS", "PIXEL_VALUES", "as_model_input", "check_compute_dtype", "compute_dtype"]
