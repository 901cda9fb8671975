"""The paper's experiments on your data, each run through the bundle's own training and evaluation workflows.

    python scripts/experiments.py compare-variants --dataset_dir D --epochs 20
    python scripts/experiments.py ablation --dataset_dir D --epochs 20
    python scripts/experiments.py learning-curve --dataset_dir D --epochs 20
    python scripts/experiments.py levers --dataset_dir D --epochs 20 --seeds '[0,1,2]'
    python scripts/experiments.py inference-levers --data_seeds '[11,12,13]' --models '{"shipped": "models/model.pt"}'
    python scripts/experiments.py generalist --epochs 60 --results docs/results/study_generalist.csv
    python scripts/experiments.py shipped --output docs/results/shipped_model.json
    python scripts/experiments.py training-history --log runs/full_default.log --label "today's defaults" --output docs/results/full_default_training.json
    python scripts/experiments.py annotation-loop --data_seeds '[21,22]' --rounds 3 --results docs/results/study_annotation.csv
    python scripts/experiments.py fine-tune --pretrained models/model.pt --data_seeds '[200,201,202]' --results docs/results/study_fine_tune.csv
    python scripts/experiments.py held-out --model models/model.pt --results docs/results/study_held_out.csv
    python scripts/experiments.py plot --results runs/experiments/results.csv
    python scripts/experiments.py table --results runs/experiments/results.csv

Every study command takes the options of `Study`: `--dataset_dir` (default demo), `--epochs`
(20), `--crop_scale` (1.0), `--work_dir` (runs/experiments), `--results` (<work_dir>/results.csv),
`--seeds` ([0]: every run is trained once per seed), `--base_overlays` (training overlays merged
before each run's own, e.g. to rerun a study made under other defaults) and `--overrides`. Every finished run appends one row to the results CSV; a study started again skips the runs
already in it, so an interrupted study resumes, and a run whose configuration another study
already trained reuses that result. `--crop_scale 0.5` trains every variant on its paper crop
halved along each axis (a budget for CPUs); `--overrides '{"batch_size": 4}'` passes any
config id to every training (and roi_size, z_halo, slab, precision to every evaluation).
"""

from bundle.cli import run_commands
from bundle.studies import COMMANDS

if __name__ == "__main__":
    run_commands(COMMANDS)
