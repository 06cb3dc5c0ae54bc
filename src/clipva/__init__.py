"""clipva: temporal valence/arousal regression from face video with CLIP image encoders.

Importing the package is cheap (no torch): the Snakefile imports it to hash module sources.
"""

__version__ = "0.1.0"
