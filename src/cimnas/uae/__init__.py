"""UAE: device-uncertainty analysis and uncertainty-aware architecture search (UAE, ASP-DAC 2021)."""
