"""cimnas: hardware-aware (HAWIS) and uncertainty-aware (UAE) architecture search for ReRAM CiM."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`cimnas.convert` (cimnas.nn.convert.convert), imported on first use so `import cimnas` stays light."""
    if name == "convert":
        from cimnas.nn.convert import convert

        return convert
    raise AttributeError(f"module 'cimnas' has no attribute {name!r}")
