"""The distance matrix and top-10 neighbours: the package's blocked products against the lab's Python
double loop, same run, and the package's top-10 against a brute-force reference.

The lab's loop is timed on the first `--loop-movies` movies only and extrapolated to all n movies by
its cost per pair (n^2 pairs): running it whole takes about a quarter of an hour for 9,742 movies.
Embeddings are the pipeline's (`--embeddings artifacts/movie_embeddings.npy`) or, without one, seeded
random unit vectors of ml-latest-small's shape (9,742 x 32).

    python -m bench.bench_similarity [--embeddings FILE] [--loop-movies 400] [--repeats 5]
"""

import argparse
from pathlib import Path

import numpy as np

from bench.common import machine, median_seconds, timed
from bench.notebook import lab_distance_matrix, lab_nearest
from recsys_pipeline.similarity import exact_top_k, nearest_neighbours, squared_distance_matrix

NEIGHBOURS = 10
ML_LATEST_SMALL_MOVIES = 9_742


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embeddings", type=Path)
    parser.add_argument("--loop-movies", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.embeddings:
        embeddings = np.load(args.embeddings).astype("float32")
        source = str(args.embeddings)
    else:
        embeddings = np.random.default_rng(0).normal(size=(ML_LATEST_SMALL_MOVIES, 32)).astype("float32")
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        source = "seeded random unit vectors"
    n = len(embeddings)
    print(f"embeddings: {source}, {n} x {embeddings.shape[1]}")

    subset = embeddings[: args.loop_movies]
    loop_seconds, lab_matrix = timed(lab_distance_matrix, subset)
    nearest_seconds, lab_nearest_rows = timed(lab_nearest, lab_matrix)
    scale = (n / len(subset)) ** 2
    lab_total = (loop_seconds + nearest_seconds) * scale
    print(
        f"lab double loop on {len(subset)} movies: {loop_seconds:.2f} s (+ {nearest_seconds:.2f} s masked argmin); "
        f"extrapolated to {n} movies by pairs (x{scale:.0f}): {lab_total:.0f} s"
    )
    matrix_seconds, matrix_times, _ = median_seconds(lambda: squared_distance_matrix(embeddings), args.repeats)
    top_k_seconds, top_k_times, (neighbours, _) = median_seconds(lambda: nearest_neighbours(embeddings, NEIGHBOURS), args.repeats)
    ours = matrix_seconds + top_k_seconds
    print(f"package distance matrix ({n} x {n}): runs {', '.join(f'{t:.2f}' for t in matrix_times)} s")
    print(f"package top-{NEIGHBOURS} of every movie: runs {', '.join(f'{t:.2f}' for t in top_k_times)} s")
    print(f"distance matrix + neighbours: lab loop (extrapolated) {lab_total:.0f} s, package {ours:.2f} s (medians) -> {lab_total / ours:.0f}x faster")

    ours_on_subset = squared_distance_matrix(subset)
    print(f"largest difference from the lab's distances on the subset: {np.max(np.abs(ours_on_subset - lab_matrix)):.2e}")
    print(f"lab's nearest movie equals the package's first neighbour on the subset: {np.array_equal(lab_nearest_rows, nearest_neighbours(subset, 1)[0][:, 0])}")
    reference, _ = exact_top_k(embeddings, NEIGHBOURS)
    differing = int(np.sum(np.any(reference != neighbours, axis=1)))
    print(f"top-{NEIGHBOURS} identical to brute force for every movie: {differing == 0} ({differing} of {n} movies differ)")


if __name__ == "__main__":
    main()
