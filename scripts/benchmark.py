"""Benchmarks behind docs/: parameters, FLOPs, forward time, training steps/s, streamed inference speed and memory.

    python scripts/benchmark.py params
    python scripts/benchmark.py flops
    python scripts/benchmark.py matmul --dtype bfloat16
    python scripts/benchmark.py forward --size 160 --repeats 20
    python scripts/benchmark.py train-workflow --variant 2d --precision fp32
    python scripts/benchmark.py inference --shape '[256,512,512]'
    python scripts/benchmark.py compare --shape '[16,512,512]' --ckpt_path models/model_2d.pt
    python scripts/benchmark.py big-volume --source data/bench512/phantom.raw --output data/big/volume.raw --repeats 8
    python scripts/benchmark.py inference --input_path data/big/volume.raw --ckpt_path M --network_def#f0 8
    python scripts/benchmark.py suite --output docs/results/benchmark_avx512_bf16.json --models '{"2.5d": "..."}'
    python scripts/benchmark.py edges|memory|tiff-pages|seamless --output docs/results/NAME.json
    python scripts/benchmark.py backends --output docs/results/backends_avx512_bf16.json
    python scripts/benchmark.py formats --output docs/results/formats.json
    python scripts/benchmark.py report

`suite` runs the default-against-fp32 measurements of docs/performance.md for one machine class
and writes them as one JSON file; `report` re-renders the docs tables from docs/results/.
"""

from bundle.benchmark import COMMANDS
from bundle.cli import run_commands

if __name__ == "__main__":
    run_commands(COMMANDS)
