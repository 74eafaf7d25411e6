"""Safe YAML for configs and every YAML file cimnas reads: no code runs, no key twice, a bounded size and depth,
and short error messages (`shorten`)."""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from cimnas.errors import CimnasError, check

_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SAFE_LOADER(_BASE_LOADER):  # noqa: N801 - the name every caller already uses
    """PyYAML's safe loader (no Python objects are ever built), in libyaml's C form where installed (~20x
    faster), that refuses a mapping with the same key twice (PyYAML keeps the last one silently: `rows:` given
    twice in a spec would change the crossbar without a word). Merge keys (`<<: *base`) may still be overridden."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeConstructor refuses it below
                    continue
                if dup:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shorten(key)} (line {key_node.start_mark.line + 1}); give each "
                        "key once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


SAFE_LOADER.add_constructor("tag:yaml.org,2002:map", SAFE_LOADER.construct_yaml_map)


def shorten(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters (an error message never prints a huge expansion)."""
    text = reprlib_repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reprlib_repr(value: Any) -> str:
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = 60, 60, 6, 4, 3
    return r.repr(value)

#: Largest config a YAML file or an override may expand to (nodes after resolving aliases), and the largest
#: config file read. Real configs have a few hundred nodes; the bound stops alias ("billion laughs") bombs.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_BYTES = 1 << 20


MAX_CONFIG_DEPTH = 64  #: deepest nesting of a config (real ones: 4); deeper is refused, never a RecursionError


def _expanded_size(node: Any, limit: int) -> int:
    """Number of nodes of `node` with aliases expanded, counting only up to `limit` (no expansion is built);
    more than `limit` also for nesting deeper than MAX_CONFIG_DEPTH (iterative: no recursion to overflow)."""
    memo: dict[int, int] = {}
    # post-order walk: a node's total is known once its children's are
    stack: list[tuple[Any, int, bool]] = [(node, 0, False)]
    while stack:
        n, depth, ready = stack.pop()
        if id(n) in memo:
            continue
        children = (list(n.keys()) + list(n.values()) if isinstance(n, dict) else list(n)
                    if isinstance(n, list | tuple) else [])
        if not children:
            memo[id(n)] = 1
            continue
        if depth > MAX_CONFIG_DEPTH:
            return limit + 1
        if not ready:
            stack.append((n, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in memo)
            continue
        memo[id(n)] = min(limit + 1, 1 + sum(memo.get(id(c), 1) for c in children))
    return memo[id(node)]


def safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load (no code runs) with a bound on the expanded size; errors are one line."""
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as e:
        raise CimnasError(f"{where} is not valid YAML: {str(e).splitlines()[0]}; fix the file") from e
    except RecursionError as e:
        raise CimnasError(f"{where} is nested too deeply to be a config; fix the file") from e
    except ValueError as e:  # an integer of more than 4,300 digits (Python's int-from-text limit)
        raise CimnasError(f"{where} holds a number too long to be a config value; fix the file") from e
    check(_expanded_size(data, MAX_CONFIG_NODES) <= MAX_CONFIG_NODES,
          f"{where} expands to more than {MAX_CONFIG_NODES:,} values or {MAX_CONFIG_DEPTH} levels (YAML aliases?); "
          "a config is far smaller: write the values out")
    return data
