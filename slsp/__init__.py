"""slsp: detect AI-generated images from the pixel fluctuations of their smoothest patches."""

__version__ = "0.1.0"
