"""Training the ranking head of the two towers on implicit feedback ("which movies does a user rate").

The rating network's towers stay as trained on stars (so the rating head, and its RMSE, are
untouched); on top of them a retrieval head learns, for every training rating, to pick the rated
movie out of the whole catalogue (a softmax over every movie, YouTube-DNN style):

    user vector  = content_projection · (user tower's content vector) + history_projection · mean(history embeddings of the user's other rated movies)
    movie vector = movie_projection · (movie tower's vector: content and ID embedding) + movie ID embedding
    score        = user vector · movie vector + movie bias

The rated movie is left out of its own history (no identity shortcut). Model selection: early
stopping on validation NDCG@10 computed by recsys_pipeline.ranking, the ranker that serves. The
result is exported as plain arrays (ranking.RankingModel) so serving needs no TensorFlow.

With `negatives="in_batch"` the softmax runs over the batch's movies with the log-Q (popularity)
correction instead of the whole catalogue: for catalogues where users × movies logits per batch are
too many. Importing this module imports TensorFlow; the Dagster layer imports it inside steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from recsys_pipeline import ranking
from recsys_pipeline.settings import RankingSettings

ALL_MOVIES = "all"


@dataclass(frozen=True)
class ImplicitData:
    """Ratings as (user row, movie row) pairs, with the per-user content vectors and per-movie tower vectors they read."""

    user_rows: np.ndarray
    movie_rows: np.ndarray
    user_content: np.ndarray
    movie_tower_vectors: np.ndarray


class RetrievalHead:
    """The trainable arrays of the head, as Keras variables."""

    def __init__(self, content_size: int, movie_vector_size: int, n_movies: int, settings: RankingSettings):
        keras.utils.set_random_seed(settings.seed)
        small = keras.initializers.RandomNormal(0.0, 0.01)
        glorot = keras.initializers.GlorotUniform(seed=settings.seed)
        d = settings.dimensions
        self.content_projection = keras.Variable(glorot((content_size, d)), name="content_projection")
        self.history_embeddings = keras.Variable(small((n_movies, d)), name="history_embeddings")
        self.history_projection = keras.Variable(glorot((d, d)), name="history_projection")
        self.movie_projection = keras.Variable(glorot((movie_vector_size, d)), name="movie_projection")
        self.movie_embeddings = keras.Variable(small((n_movies, d)), name="movie_embeddings")
        self.movie_biases = keras.Variable(np.zeros(n_movies, dtype="float32"), name="movie_biases")

    @property
    def variables(self) -> list:
        return [self.content_projection, self.history_embeddings, self.history_projection, self.movie_projection, self.movie_embeddings, self.movie_biases]

    def movie_vectors(self, movie_tower_vectors, rows=None):
        """Ranking vectors of the movies whose tower vectors are given: all of them, or those of `rows`."""
        embeddings = self.movie_embeddings if rows is None else tf.gather(self.movie_embeddings, rows)
        return tf.matmul(movie_tower_vectors, self.movie_projection) + embeddings

    def export(self, data: ImplicitData, movie_ids: np.ndarray, tower_kernels, tower_biases) -> ranking.RankingModel:
        return ranking.RankingModel(
            movie_ids=np.asarray(movie_ids),
            movie_vectors=self.movie_vectors(tf.constant(data.movie_tower_vectors)).numpy(),
            movie_biases=np.asarray(self.movie_biases.numpy()),
            history_embeddings=np.asarray(self.history_embeddings.numpy()),
            history_projection=np.asarray(self.history_projection.numpy()),
            content_projection=np.asarray(self.content_projection.numpy()),
            tower_kernels=tuple(tower_kernels),
            tower_biases=tuple(tower_biases),
        )


def _user_histories(user_rows: np.ndarray, movie_rows: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR layout of each user's rated movie rows: (start offsets, movie rows in user order)."""
    order = np.argsort(user_rows, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(user_rows, minlength=n_users))])
    return starts, movie_rows[order]


def user_grouped_order(user_rows: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """An epoch's order of the ratings: users in a fresh random order, each user's ratings together
    and shuffled. Cut into batches, it puts few users in a batch, and a batch aggregates the whole
    history of each of its users: drawn uniformly, a batch of 1,024 ratings of ml-latest-small
    holds most of its 610 users, so every batch would read most of the 70,000 histories' rows."""
    user_rank = rng.permutation(n_users)
    return np.lexsort((rng.random(len(user_rows)), user_rank[user_rows]))


def train_retrieval(
    data: ImplicitData,
    movie_ids: np.ndarray,
    tower_kernels,
    tower_biases,
    settings: RankingSettings,
    validate: Callable[[ranking.RankingModel], float] | None = None,
    on_epoch_end: Callable[[int, float, float | None], None] | None = None,
) -> tuple[ranking.RankingModel, dict[str, list[float]]]:
    """Train for `settings.epochs` epochs, or, with `validate` (exported model -> validation NDCG@10),
    stop after `patience` epochs without progress and return the best epoch's model.

    Returns the exported model and the history (`loss`, and `val_ndcg_at_10` when validating).
    """
    n_users, n_movies = len(data.user_content), len(data.movie_tower_vectors)
    head = RetrievalHead(data.user_content.shape[1], data.movie_tower_vectors.shape[1], n_movies, settings)
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    starts, history_movies = _user_histories(data.user_rows, data.movie_rows, n_users)
    user_content = tf.constant(data.user_content, dtype="float32")
    movie_tower_vectors = tf.constant(data.movie_tower_vectors, dtype="float32")
    counts = np.bincount(data.movie_rows, minlength=n_movies).astype("float64")
    log_q = tf.constant(np.log(np.maximum(counts, 1.0) / counts.sum()).astype("float32"))

    # Batch sizes, users per batch and history rows vary from batch to batch: one trace for every shape.
    vector = tf.TensorSpec([None], "int32")
    @tf.function(input_signature=[vector, vector, vector, vector, tf.TensorSpec([None], "float32"), vector])
    def step(batch_users, batch_movies, history_rows, history_segments, history_sizes, batch_positions):
        with tf.GradientTape() as tape:
            # Each batch user's history sum, minus the rated movie itself: the user as known without it.
            sums = tf.math.unsorted_segment_sum(tf.gather(head.history_embeddings, history_rows), history_segments, tf.shape(history_sizes)[0])
            own = tf.gather(head.history_embeddings, batch_movies)
            sizes = tf.gather(history_sizes, batch_positions) - 1.0
            history = (tf.gather(sums, batch_positions) - own) / tf.maximum(sizes, 1.0)[:, None]
            users = tf.matmul(tf.gather(user_content, batch_users), head.content_projection) + tf.matmul(history, head.history_projection)
            if settings.negatives == ALL_MOVIES:
                logits = tf.matmul(users, head.movie_vectors(movie_tower_vectors), transpose_b=True) + head.movie_biases
                labels = batch_movies
            else:
                candidates, labels = tf.unique(batch_movies)
                vectors = head.movie_vectors(tf.gather(movie_tower_vectors, candidates), candidates)
                logits = tf.matmul(users, vectors, transpose_b=True) + tf.gather(head.movie_biases - log_q, candidates)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, head.variables), head.variables))
        return loss

    rng = np.random.default_rng(settings.seed)
    history: dict[str, list[float]] = {"loss": []}
    best, best_score, waited = None, -math.inf, 0
    for epoch in range(settings.epochs):
        order = user_grouped_order(data.user_rows, n_users, rng)
        losses = []
        for begin in range(0, len(order), settings.batch_size):
            batch = order[begin : begin + settings.batch_size]
            users, positions = np.unique(data.user_rows[batch], return_inverse=True)
            sizes = starts[users + 1] - starts[users]
            segments = np.repeat(np.arange(len(users)), sizes)
            rows = history_movies[np.concatenate([np.arange(starts[u], starts[u + 1]) for u in users])]
            losses.append(
                float(
                    step(
                        data.user_rows[batch].astype("int32"),
                        data.movie_rows[batch].astype("int32"),
                        rows.astype("int32"),
                        segments.astype("int32"),
                        sizes.astype("float32"),
                        positions.astype("int32"),
                    )
                )
            )
        history["loss"].append(float(np.mean(losses)))
        model = head.export(data, movie_ids, tower_kernels, tower_biases)
        score = None
        if validate is not None:
            score = validate(model)
            history.setdefault("val_ndcg_at_10", []).append(score)
            if score > best_score:
                best, best_score, waited = model, score, 0
            else:
                waited += 1
        else:
            best = model
        if on_epoch_end is not None:
            on_epoch_end(epoch, history["loss"][-1], score)
        if validate is not None and waited >= settings.patience:
            break
    return best, history


def user_tower_layers(rating_model: keras.Model, tower: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Kernels and biases of a tower's content path (its Dense layers up to the content vector), in order."""
    side = rating_model.get_layer(tower)
    dense = [layer for layer in side.layers if isinstance(layer, keras.layers.Dense) and "bias" not in layer.name]
    return [np.asarray(layer.get_weights()[0]) for layer in dense], [np.asarray(layer.get_weights()[1]) for layer in dense]
