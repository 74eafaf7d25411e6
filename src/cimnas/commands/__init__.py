"""CLI command modules: each defines `register(subparsers)`; see cimnas.cli.

Imports of pipelines, models, data and hardware stay inside the command handlers (lazy: start-up cost).
Measured on the 2-core dev box under load (issue 9): `import cimnas.cli; cimnas.cli.build_parser()`
0.25-0.45 s, and importing the pipelines on top of it (`cimnas.pipelines.hawis`, `.uae.search`, `.uae.final`,
`.uae.analysis_run`, `.train`, `.studies.*`, `cimnas.data`, `cimnas.hardware`, `cimnas.nn.models`: torch and
all) another 6.7-9.8 s, which `cimnas --help` (0.33 s wall) would otherwise pay on every call.
"""
