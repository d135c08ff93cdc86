"""Subprocess side of the skops mutation campaign (test_fuzz_skops.py).

Reads requests from stdin, each a 4-byte big-endian length and then a JSON
line (estimator, params, random_state, n_features) followed by the artifact
bytes; loads the artifact with p2pml's strict reader and predicts as the
verifier does, and writes one JSON line per request:

* ``{"outcome": "refused"}``: ModelArtifactError, the documented refusal;
* ``{"outcome": "loaded", "predict": "ok" | exception type}``: the verifier
  turns any exception from predicting into ``bad-result-model``;
* ``{"outcome": "escaped", "error": ...}``: any other exception from the
  reader: a bug.

A segfault or a hang shows as a dead or silent worker to the parent. The
address space is capped so that a model that asks for huge arrays fails
with MemoryError instead of taking the machine down.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
import warnings

ADDRESS_SPACE = 4 * 1024**3


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import numpy as np

    from p2pml.errors import ModelArtifactError
    from p2pml.ml.artifact import load_model

    warnings.simplefilter("ignore")
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (size,) = struct.unpack(">I", head)
        body = stdin.read(size)
        meta_line, _, artifact = body.partition(b"\n")
        meta = json.loads(meta_line)
        X = np.linspace(-3.0, 3.0, 8 * meta["n_features"]).reshape(8, meta["n_features"])
        try:
            model = load_model(
                artifact,
                meta["estimator"],
                {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()},
                meta["random_state"],
                n_features=meta["n_features"],
            )
        except ModelArtifactError:
            reply = {"outcome": "refused"}
        except BaseException as e:  # what the campaign looks for
            reply = {"outcome": "escaped", "error": f"{type(e).__name__}: {e}"[:500]}
        else:
            try:
                model.predict(X)
                if hasattr(model, "predict_proba"):
                    model.predict_proba(X)
                reply = {"outcome": "loaded", "predict": "ok"}
            except Exception as e:  # the verifier catches these too
                reply = {"outcome": "loaded", "predict": type(e).__name__}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
