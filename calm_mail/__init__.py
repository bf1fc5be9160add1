"""calm-mail: build, send and measure the Weekly Winddown email."""

__version__ = "0.1.0"
