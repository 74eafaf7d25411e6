"""CLI command modules: each defines `register(subparsers)`; see cimnas.cli."""
