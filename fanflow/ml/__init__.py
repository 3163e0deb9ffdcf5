"""Machine-learning steps of the reference workload: data sources, the model zoo, metrics,
selection and the coverage report.

Everything here is an ordinary step function or library code that any user could have
written; nothing imports the engine. Heavy libraries (torch, scikit-learn, matplotlib) are
imported by the modules that need them, so importing ``fanflow.ml`` stays cheap.
"""

from fanflow.ml.errors import DataError, ParameterError

__all__ = ["DataError", "ParameterError"]
