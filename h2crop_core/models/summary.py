"""Model size and cost without running it: parameters per component, forward FLOPs, output shapes.

Everything here builds the model on PyTorch's ``meta`` device (shapes, no storage, no arithmetic), so
even the 1-TFLOP presets are summarised in well under a second. FLOPs follow the benchmark's convention:
one multiply-add = 2 FLOPs; convolutions, linear layers and matrix products counted, attention's QKᵀ and
AV included (SDPA is forced onto its math kernel while counting, the only one whose products the counter
sees); norms, softmax and interpolation not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import ModelConfig

#: components reported separately, by module path inside DualStreamModel.
COMPONENTS: tuple[str, ...] = (
    "s2.encoder",
    "s2.decoder",
    "enmap.spatial",
    "enmap.spectral",
    "enmap.merge",
    "enmap.refine",
    "fusion",
    "heads",
)


def build_meta(config: ModelConfig) -> DualStreamModel:
    """The model on the meta device: real structure, no memory."""
    with torch.device("meta"):
        return DualStreamModel(config)


def example_inputs(
    config: ModelConfig,
    batch: int = 1,
    tile: int = 192,
    device: torch.device | str = "meta",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Inputs of the shapes ``config`` takes for ``tile``×``tile`` S2 pixels: random normal s2/enmap, random
    prior ids (some 255) — or empty tensors on the meta device."""
    size = tile // config.enmap_upscale
    shapes = {
        "s2": (batch, config.months, config.s2_bands, tile, tile),
        "enmap": (batch, config.enmap_bands, size, size),
        "prior": (batch, 4, tile, tile),
    }
    inputs: dict[str, Tensor] = {}
    for key in config.input_keys:
        if key == "prior":
            high = min(config.num_classes)
            ids = (
                torch.randint(0, high, shapes[key], generator=generator)
                if str(device) != "meta"
                else torch.empty(shapes[key])
            )
            if str(device) != "meta":
                ids[..., :2, :2] = 255  # a few unlabelled pixels
            inputs[key] = ids.to(device=device, dtype=torch.uint8)
        else:
            inputs[key] = (
                torch.randn(shapes[key], generator=generator).to(device)
                if str(device) != "meta"
                else torch.empty(shapes[key], device="meta")
            )
    return inputs


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per :data:`COMPONENTS` entry present in ``model``, plus ``total``."""
    counts: dict[str, int] = {}
    for path in COMPONENTS:
        module = _find(model, path)
        if module is not None:
            counts[path] = sum(p.numel() for p in module.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def forward_flops(model: DualStreamModel, inputs: Mapping[str, Tensor]) -> dict[str, int]:
    """Forward FLOPs per component (and ``total``) of one call on ``inputs`` (meta or real tensors)."""
    return _counted_forward(model, inputs)[1]


def _counted_forward(model: DualStreamModel, inputs: Mapping[str, Tensor]) -> tuple[list[Tensor], dict[str, int]]:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        outputs = model(**inputs)
    by_module = counter.get_flop_counts()
    root = type(model).__name__
    flops = {
        path: sum(by_module.get(f"{root}.{path}", {}).values()) for path in COMPONENTS if _find(model, path) is not None
    }
    flops["total"] = counter.get_total_flops()
    return outputs, flops


@dataclass
class ModelSummary:
    """Size and cost of one configuration at one tile size (batch 1)."""

    name: str
    tile: int
    parameters: dict[str, int]
    flops: dict[str, int]
    output_shapes: list[tuple[int, ...]]
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tile": self.tile,
            "parameters": self.parameters,
            "gflops": {k: round(v / 1e9, 3) for k, v in self.flops.items()},
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "output_shapes": [list(s) for s in self.output_shapes],
        }


def summarize(config: ModelConfig, tile: int = 192) -> ModelSummary:
    """Parameters per component, forward FLOPs and output shapes of ``config`` on a ``tile``² S2 tile."""
    model = build_meta(config)
    inputs = example_inputs(config, tile=tile)
    outputs, flops = _counted_forward(model, inputs)
    return ModelSummary(
        name=config.name,
        tile=tile,
        parameters=parameter_counts(model),
        flops=flops,
        output_shapes=[tuple(o.shape) for o in outputs],
        inputs={k: tuple(v.shape) for k, v in inputs.items()},
    )


def _find(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None
