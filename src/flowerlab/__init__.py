"""flowerlab: the Fast and Lean Data Science Keras flowers labs as one reproducible study.

Importing the package is cheap on purpose: TensorFlow is imported only by the modules that
need it, so that parsing the Snakemake workflow never pays TensorFlow's start-up.

It does one thing more, before anything can import TensorFlow: it sets TensorFlow's CPU kernel
and allocator settings that the user has not set (flowerlab.kernels), so that every process of
the study runs the fast kernels on any x86-64 CPU. Where TensorFlow was imported first, it is
too late to change them, and nothing is set (the records then show TensorFlow's own choice).
And it keeps TensorFlow's start-up notices (no CUDA driver, CPU instructions) out of the logs
(flowerlab.startup_noise).
"""

from flowerlab import kernels as _kernels
from flowerlab import startup_noise as _startup_noise

if not _kernels.tensorflow_loaded_first():
    _kernels.apply_defaults()
    _startup_noise.install()

__version__ = "0.1.0"
