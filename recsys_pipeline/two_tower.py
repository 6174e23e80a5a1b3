"""The notebook's two-tower network in Keras: build, train by streaming index batches, embed.

Importing this module imports TensorFlow (seconds and hundreds of MB), so the Dagster layer imports
it only inside the steps that train or embed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from recsys_pipeline.model_inputs import RatingRows

USER_TOWER = "user_tower"
MOVIE_TOWER = "movie_tower"
USER_INPUT = "user_features"
MOVIE_INPUT = "movie_features"


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 47005
    hidden_units: tuple[int, ...] = (256, 128)
    embedding_size: int = 32


def build_two_tower(n_user_inputs: int, n_movie_inputs: int, settings: TrainingSettings) -> keras.Model:
    """Two Dense towers ending in unit-length embeddings; their dot product is the scaled rating."""
    keras.utils.set_random_seed(settings.seed)

    def tower(name: str, n_inputs: int) -> keras.Sequential:
        return keras.Sequential(
            [
                keras.Input((n_inputs,)),
                *(keras.layers.Dense(units, activation="relu") for units in settings.hidden_units),
                keras.layers.Dense(settings.embedding_size),
                # Unlike a Lambda(l2_normalize), this layer survives saving and reloading.
                keras.layers.UnitNormalization(),
            ],
            name=name,
        )

    user_input = keras.Input((n_user_inputs,), name=USER_INPUT)
    movie_input = keras.Input((n_movie_inputs,), name=MOVIE_INPUT)
    user_embedding = tower(USER_TOWER, n_user_inputs)(user_input)
    movie_embedding = tower(MOVIE_TOWER, n_movie_inputs)(movie_input)
    rating = keras.layers.Dot(axes=1, name="scaled_rating")([user_embedding, movie_embedding])
    model = keras.Model([user_input, movie_input], rating, name="two_tower")
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    return model


class RatingBatches(keras.utils.PyDataset):
    """Batches gathered by index from the per-user and per-movie matrices.

    The per-rating feature matrix is never built, so memory grows with users + movies, not with
    ratings. With a seed, the order is reshuffled reproducibly every epoch.
    """

    def __init__(self, user_matrix: np.ndarray, movie_matrix: np.ndarray, rows: RatingRows, batch_size: int, seed: int | None = None):
        super().__init__()
        self.user_matrix = user_matrix
        self.movie_matrix = movie_matrix
        self.rows = rows
        self.batch_size = batch_size
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.order = np.arange(len(rows.targets))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index: int):
        batch = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        inputs = {
            USER_INPUT: self.user_matrix[self.rows.user_rows[batch]],
            MOVIE_INPUT: self.movie_matrix[self.rows.movie_rows[batch]],
        }
        return inputs, self.rows.targets[batch]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)


def train_two_tower(
    user_matrix: np.ndarray,
    movie_matrix: np.ndarray,
    train: RatingRows,
    validation: RatingRows,
    settings: TrainingSettings,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train with early stopping on validation loss, keeping the best epoch's weights."""
    model = build_two_tower(user_matrix.shape[1], movie_matrix.shape[1], settings)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
    ]
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch_end(epoch, dict(logs or {}))))
    history = model.fit(
        RatingBatches(user_matrix, movie_matrix, train, settings.batch_size, seed=settings.seed),
        validation_data=RatingBatches(user_matrix, movie_matrix, validation, 8192),
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return model, {name: [float(v) for v in values] for name, values in history.history.items()}


def embed(model: keras.Model, tower: str, matrix: np.ndarray) -> np.ndarray:
    """Unit-length embeddings of every row of `matrix` through one tower."""
    return np.asarray(model.get_layer(tower).predict(matrix, batch_size=8192, verbose=0), dtype="float32")


def load_model(path: str) -> keras.Model:
    # safe_mode refuses to deserialise arbitrary Python (lambdas) from the file.
    return keras.saving.load_model(path, safe_mode=True)
