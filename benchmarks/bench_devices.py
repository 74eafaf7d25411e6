"""Device-model benchmarks (issue 19): one Monte-Carlo trial under device models / one clean evaluation of the
same images (binarized ResNet-20, CIFAR-10 shape 3x32x32, 256 random images in batches of 128, CPU threads as
set by OMP_NUM_THREADS). Ratios, never timed asserts.

dev_weight_trial_vs_clean: programming + read noise (reram-wan2022, read noise drawn per batch), crossbars read
                           exactly (periphery ideal: read-back weights). Goal <= 2.
dev_adc_trial_vs_clean:    programming + read noise + the per-tile dataflow with an 8-bit ADC (periphery tile,
                           adc_bits 8). Goal <= 2.
dev_full_dataflow_vs_clean: everything on: programming + read noise + relaxation (1 day), IR drop
                           (wire_resistance_ohm 1), out_noise 0.5, 8-bit ADC at 128 rows per read, DAC input bits
                           4. Goal <= 5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ratio  # noqa: E402

from cimnas.hardware.aging import chip_models  # noqa: E402
from cimnas.hardware.crossbar import CrossbarSpec  # noqa: E402
from cimnas.hardware.devices import load_device  # noqa: E402
from cimnas.hardware.mapping import map_model  # noqa: E402
from cimnas.hardware.montecarlo import accuracy, mapped_draw, run_trial  # noqa: E402
from cimnas.nn.models import build_model  # noqa: E402


class _Batches:
    def __init__(self, batches):
        self.batches = batches
        self.n = sum(len(y) for _, y in batches)

    def __iter__(self):
        return iter(self.batches)


def _setup(images: int = 256, batch: int = 128):
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, num_classes=10, image_size=32, precision="binary", seed=0).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(images, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    return model, _Batches([(x[i:i + batch], y[i:i + batch]) for i in range(0, images, batch)])


def _ratio(model, batches, preset, time_s: float = 0.0) -> float:
    spec = CrossbarSpec()
    mapped = map_model(model, spec)
    draw = mapped_draw(mapped, chip_models(preset, time_s, False), preset.periphery)
    counter = iter(range(10**9))

    def trial():
        run_trial(model, draw, batches, 0, next(counter))

    def clean():
        accuracy(model, batches)

    return ratio(trial, clean, repeats=3, rounds=3)  # alternating rounds: drift hits both alike


def run() -> dict:
    model, batches = _setup()
    weight = load_device("reram-wan2022")
    adc8 = load_device("reram-wan2022", ["periphery.mode=tile", "periphery.adc_bits=8"])
    full = load_device("reram-wan2022", ["periphery.mode=tile", "periphery.adc_bits=8", "periphery.rows_per_read=128",
                                         "periphery.out_noise=0.5", "periphery.input_bits=4",
                                         "periphery.wire_resistance_ohm=1"])
    return {"dev_weight_trial_vs_clean": round(_ratio(model, batches, weight), 3),
            "dev_adc_trial_vs_clean": round(_ratio(model, batches, adc8), 3),
            "dev_full_dataflow_vs_clean": round(_ratio(model, batches, full, 86400.0), 3)}


if __name__ == "__main__":
    print(run())
