"""The training layer: task specs, estimator allowlist, partitions, training
workers, safe model artifacts and result verification.

Pure modules the chain may import (no sklearn/pandas at import time, no I/O):
``spec``, ``estimators``, ``metrics``, ``partition`` (numpy only). The rest
(``dataset``, ``artifact``, ``worker``, ``pool``, ``trainer``, ``verify``)
run training and verification.
"""
