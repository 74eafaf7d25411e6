"""cimnas: hardware-aware (HAWIS) and uncertainty-aware (UAE) architecture search for ReRAM CiM."""

__version__ = "0.1.0"
