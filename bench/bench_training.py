"""Training: the package's settings (batches gathered by index, batch 512, Adam 1e-3, early stopping)
against the notebook's (per-rating arrays, 20 epochs at batch 32, Adam 0.01), same run, same
features, same split, same seed; both report validation RMSE in stars.

    python -m bench.bench_training [--movielens DIR] [--repeats 1] [--baseline-epochs 20]
"""

import argparse
from pathlib import Path

import numpy as np

from bench.bench_features import package_features
from bench.common import ML_LATEST_SMALL, machine, median_seconds, report
from bench.notebook import notebook_training
from recsys_pipeline import evaluation, features, splits
from recsys_pipeline.model_inputs import predict_scaled, rating_rows, scaled_inputs
from recsys_pipeline.scaling import fit_scalers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--movielens", type=Path, default=ML_LATEST_SMALL)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-epochs", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    from recsys_pipeline import two_tower

    tables = package_features(args.movielens)
    movie_table, user_table, labelled = tables["movie_features"], tables["user_features"], tables["splits"]
    train = splits.training_rows(labelled)
    validation = labelled[labelled["split"] == "validation"]
    scalers = fit_scalers(train, user_table, features.user_input_columns(user_table), movie_table, features.movie_input_columns(movie_table))
    inputs = scaled_inputs(user_table, movie_table, scalers)
    train_rows, validation_rows = rating_rows(train, inputs, scalers), rating_rows(validation, inputs, scalers)

    def validation_rmse(user_embeddings: np.ndarray, movie_embeddings: np.ndarray) -> float:
        scaled = predict_scaled(user_embeddings, movie_embeddings, validation_rows)
        return evaluation.rmse(evaluation.clip_stars(scalers.target.to_stars(scaled)), validation["rating"])

    def package_training():
        model, history = two_tower.train_two_tower(inputs.user_matrix, inputs.movie_matrix, train_rows, validation_rows, two_tower.TrainingSettings())
        rmse = validation_rmse(
            two_tower.embed(model, two_tower.USER_TOWER, inputs.user_matrix), two_tower.embed(model, two_tower.MOVIE_TOWER, inputs.movie_matrix)
        )
        return rmse, len(history["loss"])

    def per_rating(rows):
        # The notebook's layout: one user row and one movie row per rating, materialised up front.
        return inputs.user_matrix[rows.user_rows], inputs.movie_matrix[rows.movie_rows], rows.targets

    def baseline_training():
        user_train, movie_train, y_train = per_rating(train_rows)
        user_cv, movie_cv, y_cv = per_rating(validation_rows)
        model = notebook_training(user_train, movie_train, y_train, user_cv, movie_cv, y_cv, epochs=args.baseline_epochs)
        scaled = model.predict([user_cv, movie_cv], batch_size=8192, verbose=0).ravel()
        return evaluation.rmse(evaluation.clip_stars(scalers.target.to_stars(scaled)), validation["rating"])

    ours, our_times, (our_rmse, epochs_run) = median_seconds(package_training, args.repeats)
    baseline, baseline_times, baseline_rmse = median_seconds(baseline_training, 1)
    global_mean = evaluation.rmse(np.full(len(validation), train["rating"].mean()), validation["rating"])
    print(f"package: {epochs_run} epochs (early stopping), runs {', '.join(f'{t:.1f}' for t in our_times)} s, validation RMSE {our_rmse:.4f}")
    print(f"notebook: {args.baseline_epochs} epochs at batch 32, {baseline_times[0]:.1f} s, validation RMSE {baseline_rmse:.4f}")
    print(f"global-mean validation RMSE {global_mean:.4f}; package RMSE {'<=' if our_rmse <= baseline_rmse else '>'} notebook RMSE")
    report("training", baseline, ours, f"notebook ({args.baseline_epochs} epochs, batch 32)", "package")


if __name__ == "__main__":
    main()
