"""The experiment binaries: thin absl apps over tff_hgb.experiment.

Importing the package sets TensorFlow's C++ log level (unless the user set it)
before any binary can load TensorFlow (`startup`).
"""

from experiments import startup

startup.set_default_log_level()
