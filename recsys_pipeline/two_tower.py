"""The two-tower network in Keras: build, train by streaming index batches, score.

Each side (user, movie) is a content tower (Dense layers with dropout on the side's features) and,
in the hybrid variant, a learned ID embedding added to the tower's output; each side also has a
bias (a linear function of the features, plus a learned ID bias in the hybrid). The prediction, in
stars, is scale · (user vector · movie vector) + offset + user bias + movie bias. The vectors are
not unit-normalised: the ablation in docs/quality.md shows a free dot product predicts better.

A user or movie without training ratings gets the out-of-vocabulary ID (row n of the embedding
tables), zeroed after training, so it is scored by content alone: the cold-start path. The
content-only variant (hybrid=False, the notebook's design) has no ID inputs at all.

Importing this module imports TensorFlow (seconds and hundreds of MB), so the Dagster layer imports
it only inside the steps that train or embed.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from recsys_pipeline.model_inputs import ModelInputs, RatingRows, Scorer, SideInputs, TowerOutputs
from recsys_pipeline.settings import TrainingSettings

USER_TOWER = "user_tower"
MOVIE_TOWER = "movie_tower"
USER_INPUT = "user_features"
MOVIE_INPUT = "movie_features"
USER_ID = "user_id"
MOVIE_ID = "movie_id"
SCALE = "scale"
# The candidate's record inside its .keras file (a zip); Keras reads only its own entries.
CANDIDATE_RECORD = "recsys_candidate.json"


def _side(name: str, n_inputs: int, n_ids: int, settings: TrainingSettings) -> keras.Model:
    """One side: features (and ID) -> (vector, bias). ID n_ids is the out-of-vocabulary row."""
    features = keras.Input((n_inputs,), name=f"{name}_features")
    hidden = features
    for units in settings.tower_widths:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
        hidden = keras.layers.Dropout(settings.dropout)(hidden)
    vector = keras.layers.Dense(settings.embedding_size, name=f"{name}_content_vector")(hidden)
    # Zero-initialised, like the offset at the training mean, so training starts from the global mean.
    bias = keras.layers.Dense(1, kernel_initializer="zeros", trainable=settings.biases, name=f"{name}_content_bias")(features)
    inputs = [features]
    if settings.hybrid:
        ids = keras.Input((), dtype="int32", name=f"{name}_ids")
        inputs.append(ids)
        id_vector = keras.layers.Embedding(
            n_ids + 1,
            settings.embedding_size,
            embeddings_initializer=keras.initializers.RandomNormal(0.0, 0.01),
            embeddings_regularizer=keras.regularizers.l2(settings.id_embedding_l2),
            name=f"{name}_id_embedding",
        )(ids)
        id_bias = keras.layers.Embedding(
            n_ids + 1, 1, embeddings_initializer="zeros", embeddings_regularizer=keras.regularizers.l2(settings.id_bias_l2), name=f"{name}_id_bias"
        )(ids)
        vector = keras.layers.Add()([vector, id_vector])
        bias = keras.layers.Add()([bias, keras.layers.Flatten()(id_bias)])
    if settings.unit_vectors:
        # Unlike a Lambda(l2_normalize), this layer survives saving and reloading.
        vector = keras.layers.UnitNormalization()(vector)
    return keras.Model(inputs, [vector, bias], name=name)


def build_two_tower(n_user_inputs: int, n_movie_inputs: int, n_users: int, n_movies: int, global_mean: float, settings: TrainingSettings) -> keras.Model:
    """The whole network; its output is the predicted rating in stars (offset starts at the training mean)."""
    keras.utils.set_random_seed(settings.seed)
    user_side = _side(USER_TOWER, n_user_inputs, n_users, settings)
    movie_side = _side(MOVIE_TOWER, n_movie_inputs, n_movies, settings)
    inputs = {USER_INPUT: keras.Input((n_user_inputs,), name=USER_INPUT), MOVIE_INPUT: keras.Input((n_movie_inputs,), name=MOVIE_INPUT)}
    if settings.hybrid:
        inputs[USER_ID] = keras.Input((), dtype="int32", name=USER_ID)
        inputs[MOVIE_ID] = keras.Input((), dtype="int32", name=MOVIE_ID)
        user_vector, user_bias = user_side([inputs[USER_INPUT], inputs[USER_ID]])
        movie_vector, movie_bias = movie_side([inputs[MOVIE_INPUT], inputs[MOVIE_ID]])
    else:
        user_vector, user_bias = user_side([inputs[USER_INPUT]])
        movie_vector, movie_bias = movie_side([inputs[MOVIE_INPUT]])
    dot = keras.layers.Dot(axes=1)([user_vector, movie_vector])
    scaled = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(global_mean), name=SCALE)(dot)
    rating = keras.layers.Add(name="rating")([scaled, user_bias, movie_bias])
    model = keras.Model(inputs, rating, name="two_tower")
    # Sixteen steps per call of the compiled training function: the same updates in the same order,
    # with less of Keras's per-step Python between them.
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse", steps_per_execution=16)
    return model


def is_hybrid(model: keras.Model) -> bool:
    return USER_ID in model.input


class RatingBatches(keras.utils.PyDataset):
    """Batches gathered by index from the per-user and per-movie feature tables.

    The per-rating feature matrix is never built, so memory grows with users + movies (times the
    out-of-fold blocks), not with ratings. With a seed, the order is reshuffled reproducibly every epoch.
    """

    def __init__(self, users: SideInputs, movies: SideInputs, rows: RatingRows, batch_size: int, with_ids: bool, seed: int | None = None):
        super().__init__()
        self.users = users
        self.movies = movies
        self.rows = rows
        self.batch_size = batch_size
        self.with_ids = with_ids
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.order = np.arange(len(rows.targets))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index: int):
        batch = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        users, movies, block = self.rows.user_rows[batch], self.rows.movie_rows[batch], self.rows.block[batch]
        inputs = {USER_INPUT: self.users.matrix[block, users], MOVIE_INPUT: self.movies.matrix[block, movies]}
        if self.with_ids:
            inputs[USER_ID] = self.users.ids[users]
            inputs[MOVIE_ID] = self.movies.ids[movies]
        return inputs, self.rows.targets[batch]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)


def train_two_tower(
    users: SideInputs,
    movies: SideInputs,
    train: RatingRows,
    validation: RatingRows,
    global_mean: float,
    settings: TrainingSettings,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train with early stopping on validation loss (keeping the best epoch's weights) and a
    learning rate that drops when validation loss stalls."""
    model = build_two_tower(users.matrix.shape[2], movies.matrix.shape[2], len(users.ids), len(movies.ids), global_mean, settings)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", min_delta=settings.early_stopping_min_delta, patience=settings.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=settings.lr_reduction_factor, patience=settings.lr_reduction_patience, min_lr=settings.min_learning_rate),
    ]
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch_end(epoch, dict(logs or {}))))
    history = model.fit(
        RatingBatches(users, movies, train, settings.batch_size, settings.hybrid, seed=settings.seed),
        validation_data=RatingBatches(users, movies, validation, 8192, settings.hybrid),
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    if settings.hybrid:
        _zero_out_of_vocabulary_rows(model)
    history_lists = {name: [float(v) for v in values] for name, values in history.history.items()}
    history_lists.pop("learning_rate", None)
    return model, history_lists


def _zero_out_of_vocabulary_rows(model: keras.Model) -> None:
    """The last ID row is never trained; zeroing it leaves unseen users and movies to their content."""
    for side in (USER_TOWER, MOVIE_TOWER):
        for layer in (f"{side}_id_embedding", f"{side}_id_bias"):
            embedding = model.get_layer(side).get_layer(layer)
            weights = embedding.get_weights()[0]
            weights[-1] = 0.0
            embedding.set_weights([weights])


def embed(model: keras.Model, tower: str, side: SideInputs) -> TowerOutputs:
    """Vectors and biases of every row of the side's full-training table (block 0)."""
    inputs = [side.matrix[0]] + ([side.ids] if is_hybrid(model) else [])
    vectors, biases = model.get_layer(tower).predict(inputs, batch_size=8192, verbose=0)
    return TowerOutputs(np.asarray(vectors, dtype="float32"), np.asarray(biases, dtype="float32").ravel())


def scale_and_offset(model: keras.Model) -> tuple[float, float]:
    weights, bias = model.get_layer(SCALE).get_weights()
    return float(weights.ravel()[0]), float(bias.ravel()[0])


def load_model(path: str) -> keras.Model:
    # safe_mode refuses to deserialise arbitrary Python (lambdas) from the file.
    return keras.saving.load_model(path, safe_mode=True)


@dataclass(frozen=True)
class StoredCandidate:
    """What the trained_model artifact holds: a model with its validation RMSE and the run that
    trained it, in one file, so the regression gate judges the very model it accepts, whichever
    worker or Dagster instance reads it; and what that RMSE was measured on: the fingerprint of the
    validation ratings (splits.validation_fingerprint) and the global mean's RMSE on them. Both are
    None in a record written by an older version (an unknown fingerprint: the gate treats the data
    as changed)."""

    model: keras.Model
    val_rmse: float
    run_id: str
    global_mean_val_rmse: float | None = None
    val_fingerprint: str | None = None


def save_candidate(candidate: StoredCandidate, path: str) -> None:
    candidate.model.save(path)
    record = {
        "val_rmse": candidate.val_rmse,
        "run_id": candidate.run_id,
        "global_mean_val_rmse": candidate.global_mean_val_rmse,
        "val_fingerprint": candidate.val_fingerprint,
    }
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(CANDIDATE_RECORD, json.dumps(record))


def load_candidate(path: str) -> StoredCandidate:
    """The stored candidate; a record without the newer fields (`global_mean_val_rmse`,
    `val_fingerprint`) loads with them None."""
    with zipfile.ZipFile(path) as archive:
        if CANDIDATE_RECORD not in archive.namelist():
            raise ValueError(f"{path}: a model without its {CANDIDATE_RECORD} (written by an older version); rematerialize trained_model.")
        record = json.loads(archive.read(CANDIDATE_RECORD))
    global_mean = record.get("global_mean_val_rmse")
    fingerprint = record.get("val_fingerprint")
    return StoredCandidate(
        load_model(path),
        float(record["val_rmse"]),
        str(record["run_id"]),
        None if global_mean is None else float(global_mean),
        None if fingerprint is None else str(fingerprint),
    )


def scorer(model: keras.Model, inputs: ModelInputs) -> Scorer:
    return Scorer(embed(model, USER_TOWER, inputs.users), embed(model, MOVIE_TOWER, inputs.movies), *scale_and_offset(model))
