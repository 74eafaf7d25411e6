"""Deployment: the integer-only residual path, the export format and the integer simulator.

- `fixed_point`: residual streams in fixed point of B bits (per-channel integer scales and shifts) and the
  PyTorch reference of the fused model with integer residuals (`fixed_residual_model`);
- `streams`: the residual terms, adds and stream readers of a fused model, from its torch.fx trace;
- `lower`: a trained model -> a program of integer ops + crossbar images (what `cimnas export` writes);
- `fileformat`: the `.npz` + JSON export format (versioned, schema-checked, no pickle, byte-reproducible);
- `simulate`: runs an export with integer arithmetic through the crossbar dataflow (`cimnas simulate`).

`deploy/` reads checkpoints and writes files; it is the only place that knows the export format.
"""
