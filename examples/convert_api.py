"""docs/your-network.md, step 1: cimnas.convert from Python (run from the repository root:
`python examples/convert_api.py`)."""

import sys

sys.path.insert(0, "examples")

import cimnas  # noqa: E402
from cimnas.hardware.crossbar import load_spec  # noqa: E402
from cimnas.hardware.energy import estimate_model  # noqa: E402
from my_net import build  # noqa: E402

model = build(num_classes=10, in_channels=1)  # plain PyTorch, 8x8 digits
conv = cimnas.convert(model, rules={"first": "digital", "*.conv*": "kbit:4"}, default="binary",
                      input_shape=(1, 8, 8))
print(conv.summary())
print(conv.layers)
res = estimate_model(model, (1, 8, 8), load_spec("mnsim-default"))
print(f"{res['energy_uj']:.3f} uJ, {res['latency_us']:.2f} us, {res['crossbars']} crossbars; digital: {res['digital']}")
