"""The label names of a classification task, for a model card.

Models of a task with string labels are fitted on int64 codes: the rank of a
label among the dataset's sorted distinct labels (:func:`p2pml.ml.dataset._target`).
A user predicting with the model wants the labels back, so the card carries
their names, recomputed here from the dataset exactly as training coded them.

Bounded memory on any dataset: one pass over the target column in chunks,
keeping only its distinct raw values (at most ``MAX_CLASSES + 1``). Whether
the column counts as numeric depends only on which values occur, so those
distinct values are re-parsed as a one-column CSV and coded by the same
function as training.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from p2pml.errors import TrainingError
from p2pml.ml.dataset import MAX_CLASSES, _target
from p2pml.ml.estimators import CLASSIFICATION

CHUNK_ROWS = 1 << 16


def label_names(path: Path, kind: str, target: str) -> tuple[str, ...]:
    """The name of each class code; ``()`` when the task's labels are numbers
    (their codes are the numbers themselves) or the dataset cannot be coded."""
    import pandas as pd

    if kind != CLASSIFICATION:
        return ()
    distinct: set[str] = set()
    try:
        chunks = pd.read_csv(
            path,
            usecols=[target],
            dtype=str,
            keep_default_na=False,
            index_col=False,
            chunksize=CHUNK_ROWS,
        )
        with chunks as reader:
            for chunk in reader:
                distinct.update(chunk[target].tolist())
                if len(distinct) > MAX_CLASSES:
                    return ()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return ()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([target])
    writer.writerows([v] for v in sorted(distinct))
    buf.seek(0)
    try:
        column = pd.read_csv(buf, index_col=False, low_memory=False)[target]
        return _target(column, kind, target)[1]
    except (TrainingError, pd.errors.ParserError, ValueError):
        return ()  # a target training refuses: no result, no names
