"""The paper's experiments on your data, run through the bundle's own training and evaluation workflows:
`study` (the resumable runner and its CSV), `runs` (each study), `held_out` (scans no training saw, against a
random forest), `tables` (figures and tables).
`scripts/experiments.py` is their command-line face."""

from .held_out import held_out
from .runs import (
    ablation,
    annotation_loop,
    compare_variants,
    fine_tune,
    generalist,
    inference_levers,
    learning_curve,
    levers,
    shipped,
    training_history,
)
from .study import Study
from .tables import plot, study_tables, table

__all__ = ["COMMANDS", "Study", "study_tables"]

COMMANDS = {
    "compare-variants": compare_variants,
    "ablation": ablation,
    "learning-curve": learning_curve,
    "levers": levers,
    "inference-levers": inference_levers,
    "annotation-loop": annotation_loop,
    "fine-tune": fine_tune,
    "shipped": shipped,
    "training-history": training_history,
    "generalist": generalist,
    "held-out": held_out,
    "plot": plot,
    "table": table,
}
