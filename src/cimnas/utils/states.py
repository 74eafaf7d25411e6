"""Does a checkpoint's state fit the live object it is loaded into? (`cimnas.runs.load_state` asks before
`load_state_dict`, which checks a model's shapes but takes any dtype, and takes an optimiser's or a scheduler's state
as it comes, to fail epochs later.)"""

from __future__ import annotations

import math
from typing import Any

import torch


def _kind(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v) if v is None else "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, torch.Tensor):
        return f"tensor {str(v.dtype).replace('torch.', '')}"
    return "list" if isinstance(v, list | tuple) else "mapping" if isinstance(v, dict) else type(v).__name__


def _same_kinds(expected: Any, got: Any, key: str) -> str | None:
    """Where `got` differs in kind from `expected` (None: it does not); floats must be finite."""
    if isinstance(got, float) and not math.isfinite(got):
        return f"{key} is {got}"
    if expected is None:  # unset now (e.g. a scheduler's last lr before its first step): any plain value
        return None
    ke, kg = _kind(expected), _kind(got)
    if ke != kg:
        return f"{key} is a {kg}, not a {ke}"
    if isinstance(expected, dict):
        return next((m for k in got if k in expected and (m := _same_kinds(expected[k], got[k], f"{key}.{k}"))), None)
    if isinstance(expected, list | tuple):
        if len(expected) != len(got):
            return f"{key} has {len(got)} entries, not {len(expected)}"
        pairs = enumerate(zip(expected, got, strict=True))
        return next((m for i, (a, b) in pairs if (m := _same_kinds(a, b, f"{key}[{i}]"))), None)
    return None


def state_mismatch(module: Any, state: dict) -> str | None:
    """What in the checkpoint state `state` does not fit `module` (None: it fits): a model's tensors must have its
    dtypes, an optimiser's state tensors the shapes and dtypes of its parameters and its param_groups the kinds of
    value they hold now, any other state (a scheduler's) the kinds of value (number, list, mapping...) it holds now;
    every float finite."""
    if isinstance(module, torch.nn.Module):
        expected = module.state_dict()
        return next((f"{k} is {_kind(v)}, not {_kind(expected[k])}" for k, v in state.items()
                     if k in expected and _kind(v) != _kind(expected[k])), None)
    if isinstance(module, torch.optim.Optimizer):
        params = [p for g in module.param_groups for p in g["params"]]
        per_param, groups = state.get("state", {}), state.get("param_groups", [])
        if not isinstance(per_param, dict) or not isinstance(groups, list):
            return "'state' is not a mapping or 'param_groups' not a list"
        for i, entry in per_param.items():
            if not (isinstance(i, int) and 0 <= i < len(params) and isinstance(entry, dict)):
                return f"state entry {i!r} names no parameter"
            for name, t in entry.items():
                if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape != params[i].shape:
                    return f"state[{i}].{name} has shape {tuple(t.shape)}, not {tuple(params[i].shape)}"
                if isinstance(t, torch.Tensor) and t.dim() > 0 and t.dtype != params[i].dtype:
                    return f"state[{i}].{name} is {t.dtype}, not {params[i].dtype}"
        return _same_kinds(module.state_dict()["param_groups"], groups, "param_groups")
    if hasattr(module, "state_dict"):
        return _same_kinds(module.state_dict(), state, "state")
    return None
