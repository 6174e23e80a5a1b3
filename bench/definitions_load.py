"""How long loading the code location takes, against importing Dagster alone and TensorFlow alone.

Each figure is the median of fresh interpreter runs (every Dagster step process pays this once).
Usage: python bench/definitions_load.py [--runs 5]
"""

import argparse
import statistics
import subprocess
import sys

PROBES = {
    "import dagster (floor)": "import dagster",
    "load recsys_pipeline.definitions": "import recsys_pipeline.definitions as d; d.defs.resolve_asset_graph()",
    "import tensorflow (avoided)": "import tensorflow",
}
TIMER = "import time, sys; t = time.perf_counter(); {code}; print(time.perf_counter() - t, 'tensorflow' in sys.modules)"


def measure(code: str, runs: int) -> tuple[float, bool]:
    seconds, imported = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", TIMER.format(code=code)], capture_output=True, text=True, check=True).stdout.split()
        seconds.append(float(out[0]))
        imported = out[1] == "True"
    return statistics.median(seconds), imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    results = {name: measure(code, runs) for name, code in PROBES.items()}
    floor = results["import dagster (floor)"][0]
    for name, (seconds, tensorflow) in results.items():
        print(f"{name:36s} {seconds:6.2f} s  ({seconds / floor:4.2f}x dagster alone)  tensorflow imported: {tensorflow}")


if __name__ == "__main__":
    main()
