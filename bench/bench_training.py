"""Training: the package's default model (out-of-fold statistics, batches gathered by index, batch
1024, Adam 5e-3, early stopping) against the notebook's (its inputs as per-rating arrays, 20 epochs
at batch 32, Adam 0.01), same run, same training ratings, same split, same seed; both report
validation RMSE in stars.

    python -m bench.bench_training [--movielens DIR] [--repeats 1] [--baseline-epochs 20]
"""

import argparse
from pathlib import Path

import numpy as np

from bench.bench_features import package_features
from bench.common import ML_LATEST_SMALL, machine, median_seconds, report
from bench.notebook import notebook_training
from recsys_pipeline import evaluation, features, splits, workflow
from recsys_pipeline.model_inputs import rating_rows, scaled_inputs
from recsys_pipeline.settings import TrainingSettings
from recsys_pipeline.standardisation import fit_scalers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movielens", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-epochs", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    tables = package_features(args.movielens)
    movie_table, user_table, labelled = tables.movie_features, tables.user_features, tables.labelled
    train = splits.training_rows(labelled)
    validation = labelled[labelled["split"] == splits.VALIDATION]
    notebook_scalers = fit_scalers(
        train, user_table, features.notebook_user_input_columns(user_table), movie_table, features.notebook_movie_input_columns(movie_table)
    )
    notebook_inputs = scaled_inputs(user_table, movie_table, notebook_scalers)

    def package_training():
        candidate = workflow.train_candidate(labelled, user_table, movie_table, tables.scalers, TrainingSettings())
        return candidate.val_rmse, len(candidate.history["loss"])

    def per_rating(ratings):
        # The notebook's layout: one user row and one movie row per rating, materialised up front,
        # targets min-max scaled to [-1, 1].
        rows = rating_rows(ratings, notebook_inputs)
        users, movies = notebook_inputs.users.matrix[0], notebook_inputs.movies.matrix[0]
        return users[rows.user_rows], movies[rows.movie_rows], notebook_scalers.target.to_unit(rows.targets)

    def baseline_training():
        user_train, movie_train, y_train = per_rating(train)
        user_cv, movie_cv, y_cv = per_rating(validation)
        model = notebook_training(user_train, movie_train, y_train, user_cv, movie_cv, y_cv, epochs=args.baseline_epochs)
        scaled = model.predict([user_cv, movie_cv], batch_size=8192, verbose=0).ravel()
        return evaluation.rmse(evaluation.clip_stars(notebook_scalers.target.to_stars(scaled)), validation["rating"])

    ours, our_times, (our_rmse, epochs_run) = median_seconds(package_training, args.repeats)
    baseline, baseline_times, baseline_rmse = median_seconds(baseline_training, 1)
    global_mean = evaluation.rmse(np.full(len(validation), train["rating"].mean()), validation["rating"])
    print(f"package: {epochs_run} epochs (early stopping), runs {', '.join(f'{t:.1f}' for t in our_times)} s, validation RMSE {our_rmse:.4f}")
    print(f"notebook: {args.baseline_epochs} epochs at batch 32, {baseline_times[0]:.1f} s, validation RMSE {baseline_rmse:.4f}")
    print(f"global-mean validation RMSE {global_mean:.4f}; package RMSE {'<=' if our_rmse <= baseline_rmse else '>'} notebook RMSE")
    report("training", baseline, ours, f"notebook ({args.baseline_epochs} epochs, batch 32)", "package")


if __name__ == "__main__":
    main()
