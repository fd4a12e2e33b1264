"""The training benchmark's results: one row per architecture, with its model FLOPs utilisation.

MFU = training FLOPs per second over the matmul peak measured in the same run.

Training FLOPs per image = 3 x the forward FLOPs (forward + backward, which costs about twice the
forward), or 1 x for a frozen backbone (backpropagation stops at its head), and 1 / cache epochs
with the feature cache (the backbone's forward pass runs once per image for all epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from roofline import LayerCost, roof_images_per_second
from steps import BenchSettings

from flowerlab.models.flops import COMPUTE_DTYPES


def parameters(model: Any) -> int:
    from flowerlab.models.build import count_parameters

    return int(count_parameters(model)[0])



COLUMNS = (
    "arch", "status", "batch_size", "image_size", "warmup_steps", "timed_steps", "rounds",
    "plain_images_per_s", "flowerlab_images_per_s", "ratio", "plain_precision", "precision",
    "plain_parameters", "flowerlab_parameters", "gflops_per_image", "flops_factor",
    "plain_train_gflops_per_s", "train_gflops_per_s", "plain_mfu", "mfu", "peak_dtype",
    "peak_gflops_per_s", "peak_float32_gflops_per_s", "peak_bfloat16_gflops_per_s",
    "plain_kernels", "kernels", "activation_mb_per_image", "bandwidth_gb_per_s", "roofline_images_per_s",
    "share_of_roofline",
    "device", "cpu_kind", "threads", "cpus", "load_average", "tensorflow", "keras", "source",
    "cache_epochs", "extraction_images_per_s", "head_images_per_s",
)



@dataclass(frozen=True)
class Measurement:
    """What one architecture's timing found; the MFU waits for the run's final peaks."""

    arch: str
    plain_images_per_s: float
    images_per_s: float
    precision: str
    image_size: int
    plain_parameters: int
    flowerlab_parameters: int
    forward_flops: int  # one image
    flops_factor: float  # training FLOPs / forward FLOPs, flowerlab's side
    plain_flops_factor: float  # the plain side's (it always trains on images)
    cache_epochs: int | None = None  # feature cache: head epochs per extraction; None: image path
    extraction_images_per_s: float | None = None
    head_images_per_s: float | None = None
    plain_kernels: str = ""  # oneDNN | Eigen: TensorFlow's default on this CPU, where the plain side ran
    kernels: str = ""  # flowerlab's side
    layer_costs: list[LayerCost] | None = None  # image path: each layer's FLOPs and bytes (bench/roofline.py)


def measured_row(m: Measurement, *, peaks: dict[str, float], settings: BenchSettings,
                 context: dict[str, Any]) -> dict[str, Any]:
    gflops = m.forward_flops / 1e9
    peak_dtype = COMPUTE_DTYPES[m.precision]
    plain_train = m.plain_flops_factor * gflops * m.plain_images_per_s
    train = m.flops_factor * gflops * m.images_per_s
    return {
        "arch": m.arch, "status": "measured", "batch_size": settings.batch_size, "image_size": m.image_size,
        "warmup_steps": settings.warmup, "timed_steps": settings.steps, "rounds": settings.rounds,
        "plain_images_per_s": round(m.plain_images_per_s, 2), "flowerlab_images_per_s": round(m.images_per_s, 2),
        "ratio": round(m.images_per_s / m.plain_images_per_s, 3), "plain_precision": "float32",
        "precision": m.precision, "plain_parameters": m.plain_parameters,
        "flowerlab_parameters": m.flowerlab_parameters, "gflops_per_image": round(gflops, 5),
        "flops_factor": m.flops_factor,
        "plain_train_gflops_per_s": round(plain_train, 3), "train_gflops_per_s": round(train, 3),
        "plain_mfu": round(plain_train / peaks["float32"], 5), "mfu": round(train / peaks[peak_dtype], 5),
        "peak_dtype": peak_dtype, "peak_gflops_per_s": round(peaks[peak_dtype], 1),
        "plain_kernels": m.plain_kernels, "kernels": m.kernels, **roof_columns(m, peaks[peak_dtype], context),
        **context,
        "cache_epochs": m.cache_epochs if m.cache_epochs is not None else "",
        "extraction_images_per_s": _rounded(m.extraction_images_per_s),
        "head_images_per_s": _rounded(m.head_images_per_s),
    }


def roof_columns(m: Measurement, peak: float, context: dict[str, Any]) -> dict[str, Any]:
    """The layer-by-layer roofline of flowerlab's training step and the share of it reached."""
    if m.layer_costs is None:  # the feature cache: a whole training, not a step
        return {"activation_mb_per_image": "", "roofline_images_per_s": "", "share_of_roofline": ""}
    roof = roof_images_per_second(m.layer_costs, peak_gflops=peak, bandwidth_gb_per_s=context["bandwidth_gb_per_s"])
    return {"activation_mb_per_image": round(sum(cost.bytes for cost in m.layer_costs) / 1e6, 1),
            "roofline_images_per_s": round(roof, 2), "share_of_roofline": round(m.images_per_s / roof, 4)}


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 2)


def skipped_row(arch: str, reason: str, context: dict[str, Any]) -> dict[str, Any]:
    return {**dict.fromkeys(COLUMNS, ""), "arch": arch, "status": reason, **context}


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'arch':<22}{'plain img/s':>12}{'flowerlab img/s':>16}{'ratio':>8}  {'precision':<15}"
          f"{'GFLOPs/img':>11}{'plain MFU':>10}{'MFU':>8}{'roofline':>10}{'of roof':>9}")
    for row in rows:
        if row["status"] != "measured":
            print(f"{row['arch']:<22}{row['status']}")
            continue
        print(f"{row['arch']:<22}{row['plain_images_per_s']:>12.1f}{row['flowerlab_images_per_s']:>16.1f}"
              f"{row['ratio']:>7.2f}x  {row['precision']:<15}{row['gflops_per_image']:>11.3f}"
              f"{row['plain_mfu']:>10.2%}{row['mfu']:>8.2%}"
              + (f"{row['roofline_images_per_s']:>10.1f}{row['share_of_roofline']:>9.0%}"
                 if row["roofline_images_per_s"] != "" else ""), flush=True)
        if row["cache_epochs"] != "":
            print(f"{'':<22}feature cache: extraction + {row['cache_epochs']} head epochs; extraction "
                  f"{row['extraction_images_per_s']:.1f} images/s, head alone {row['head_images_per_s']:.1f} images/s")
    first = rows[0]
    print(f"(CPU kind {first['cpu_kind']}; kernels: plain {first['plain_kernels']} (TensorFlow's default on it), "
          f"flowerlab {first['kernels']}; "
          f"memory {first['bandwidth_gb_per_s']} GB/s)")
    bfloat16 = f"{first['peak_bfloat16_gflops_per_s']} GFLOP/s" if first["peak_bfloat16_gflops_per_s"] != "" else "not measured"
    print(f"(batch {first['batch_size'] or '-'}, {first['device']}, {first['threads']} threads, {first['cpus']} CPUs, "
          f"load average {first['load_average']}; matmul peaks: float32 {first['peak_float32_gflops_per_s']} "
          f"GFLOP/s, bfloat16 {bfloat16}; {first['source']})")

