"""flowerlab: the Fast and Lean Data Science Keras flowers labs as one reproducible study.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
need it, so that parsing the Snakemake workflow never pays TensorFlow's start-up.
"""

__version__ = "0.1.0"
