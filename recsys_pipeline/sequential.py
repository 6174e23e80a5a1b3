"""What a person watches next: the time-aware two-tower ranking model.

The movie side is the seed's: a movie ID embedding plus a projection of the movie's scaled content
features (year, one-hot genres, rating count, shrunk mean and spread: the movie tower's input), and
a movie bias. The user side reads the user's rated movies IN ORDER, latest first:

    history order   each user's ratings sorted by (timestamp, movieId); 23% of ratings share their
                    user's timestamp second, and movieId breaks those ties deterministically (for
                    ratings.csv as shipped, sorted by userId then movieId, this is also row order)
    history item j  x_j = E_in[movie_j] + content_j · W_in + R[rank_j] (+ G[gap bucket_j])
                    rank_j = 0 for the latest rating; gap = time from rating j to the latest one
    encoder         "pool": a learned recency pooling, softmax over rank logits + x_j · q, of the x_j
                    "attention": one SASRec-style pre-LN block at the latest position (its query
                    attends over the last N items, itself included), then a ReLU feed-forward
    user vector     u = encoder(history) · W_out + user content (scaled per-genre averages) · W_c + b
    score           u · (E_out[movie] + content · W_m) + movie bias

Training predicts, from prefixes of a user's training sequence, the next `targets` movies
with a softmax over the batch's target movies with the log-Q (popularity) correction
(`negatives="in_batch"`, the default: on ml-latest-small as good a served list as the full
softmax, better towers alone, 40% less training; and it scales to any catalogue), or over the
whole catalogue (`negatives="all"`, full cross-entropy, gSASRec / Klenitskiy & Vasilev 2023);
the prefix's own movies are masked out of the softmax (they are never candidates when serving). One seed drives
initialisation and the per-epoch shuffling (a numpy Generator), and early stopping is on
validation NDCG@10 of the exported numpy model, the scorer that serves.

The export, `SequentialModel`, is plain numpy arrays (an .npz) and `SequentialModel.user_vectors`
is the numpy encoder; serving never imports TensorFlow. A visitor known by a handful of movies in
order is encoded by the same function (`visitor_scores`).

The served score blends these towers with an item-item term (recsys_pipeline.ranking.Ranker).
Importing this module does not import TensorFlow; `train_sequential` does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from recsys_pipeline.settings import RankingSettings

POOL, ATTENTION = "pool", "attention"
ENCODERS = (POOL, ATTENTION)
ALL_MOVIES, IN_BATCH = "all", "in_batch"
# log2(1 + days) buckets of the gap between a history rating and the user's latest one: 0 = same day.
GAP_BUCKETS = 12
SECONDS_PER_DAY = 86_400.0
LAYER_NORM_EPSILON = 1e-3


# --- sequences ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sequences:
    """Each user's ratings in order (CSR): user u's are movies[starts[u]:starts[u + 1]], oldest first,
    sorted by (timestamp, movieId)."""

    starts: np.ndarray
    movies: np.ndarray
    times: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        return self.movies[self.starts[user] : self.starts[user + 1]], self.times[self.starts[user] : self.starts[user + 1]]


def user_sequences(user_rows, movie_rows, timestamps, n_users: int, movie_ids=None) -> Sequences:
    """Sequences of (user row, movie row, timestamp) triples, ordered by (user, timestamp, movieId)
    (`movie_ids[movie row]`, default the movie row itself, breaks same-second ties)."""
    user_rows, movie_rows, timestamps = (np.asarray(a) for a in (user_rows, movie_rows, timestamps))
    tie = movie_rows if movie_ids is None else np.asarray(movie_ids)[movie_rows]
    order = np.lexsort((tie, timestamps, user_rows))
    starts = np.concatenate([[0], np.cumsum(np.bincount(user_rows, minlength=n_users))]).astype("int64")
    return Sequences(starts, movie_rows[order].astype("int64"), timestamps[order].astype("int64"))


def _windows(seq: Sequences, users: np.ndarray, cuts: np.ndarray, max_history: int, pad: int):
    """History of each (user, cut): the user's movies before position `cut` of their sequence, the
    last max_history of them latest first (column = recency rank), `pad` beyond; gap buckets; lengths."""
    if len(seq.movies) == 0:  # nobody has a history: a visitor known by genre ratings alone
        nothing = np.zeros((len(users), max_history), "int32")
        return nothing + pad, nothing, np.zeros(len(users), "int32")
    rank = np.arange(max_history)
    position = cuts[:, None] - 1 - rank[None, :]
    valid = position >= 0
    flat = seq.starts[users][:, None] + np.maximum(position, 0)
    movies = np.where(valid, seq.movies[flat], pad)
    times = seq.times[flat]
    gaps = gap_buckets(times[:, :1] - times)
    return movies.astype("int32"), np.where(valid, gaps, 0).astype("int32"), np.minimum(cuts, max_history).astype("int32")


def gap_buckets(gap_seconds: np.ndarray) -> np.ndarray:
    """Bucket of each gap between a history rating and the latest one: floor(log2(1 + days)), capped."""
    days = np.maximum(np.asarray(gap_seconds, dtype="float64"), 0.0) / SECONDS_PER_DAY
    return np.minimum(np.floor(np.log2(1.0 + days)), GAP_BUCKETS - 1).astype("int32")


# --- the exported model ---------------------------------------------------------------------------

MOVIE_IDS, MOVIE_VECTORS, MOVIE_BIASES, HISTORY_VECTORS = "movie_ids", "movie_vectors", "movie_biases", "history_vectors"
RANK_EMBEDDINGS, GAP_EMBEDDINGS, OUT_PROJECTION, CONTENT_PROJECTION, USER_BIAS = "rank_embeddings", "gap_embeddings", "out_projection", "content_projection", "user_bias"
ENCODER_PREFIX = "encoder_"


@dataclass(frozen=True)
class SequentialModel:
    """Every array the numpy scorer needs. Row i of the movie tables is movie_ids[i]."""

    movie_ids: np.ndarray
    movie_vectors: np.ndarray  # [M, d]: E_out + content · W_m
    movie_biases: np.ndarray  # [M]
    history_vectors: np.ndarray  # [M, d]: E_in + content · W_in, a history item before rank and gap
    rank_embeddings: np.ndarray  # [N, d]: N = the most history items read
    gap_embeddings: np.ndarray  # [GAP_BUCKETS, d], or [0, d] without gaps
    out_projection: np.ndarray  # [d, d]
    content_projection: np.ndarray  # [user features, d], or [0, d] without the user's content
    user_bias: np.ndarray  # [d]
    encoder: str
    encoder_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # Served score = standardised towers + item_item_weight × standardised item-item term, the term being
    # recency-weighted EASE plus transition_weight × what people rated next (recsys_pipeline.ranking).
    item_item_weight: float = 0.0
    item_item_half_life: float = math.inf
    item_item_l2: float = 100.0
    transition_weight: float = 0.0

    @property
    def max_history(self) -> int:
        return len(self.rank_embeddings)

    def arrays(self) -> dict[str, np.ndarray]:
        named = {
            MOVIE_IDS: self.movie_ids,
            MOVIE_VECTORS: self.movie_vectors,
            MOVIE_BIASES: self.movie_biases,
            HISTORY_VECTORS: self.history_vectors,
            RANK_EMBEDDINGS: self.rank_embeddings,
            GAP_EMBEDDINGS: self.gap_embeddings,
            OUT_PROJECTION: self.out_projection,
            CONTENT_PROJECTION: self.content_projection,
            USER_BIAS: self.user_bias,
            "encoder": np.asarray(self.encoder),
            "item_item_weight": np.asarray(self.item_item_weight),
            "item_item_half_life": np.asarray(self.item_item_half_life),
            "item_item_l2": np.asarray(self.item_item_l2),
            "transition_weight": np.asarray(self.transition_weight),
        }
        named.update({ENCODER_PREFIX + name: value for name, value in self.encoder_arrays.items()})
        return named

    @classmethod
    def from_arrays(cls, arrays) -> SequentialModel:
        return cls(
            movie_ids=np.asarray(arrays[MOVIE_IDS]),
            movie_vectors=np.asarray(arrays[MOVIE_VECTORS]),
            movie_biases=np.asarray(arrays[MOVIE_BIASES]),
            history_vectors=np.asarray(arrays[HISTORY_VECTORS]),
            rank_embeddings=np.asarray(arrays[RANK_EMBEDDINGS]),
            gap_embeddings=np.asarray(arrays[GAP_EMBEDDINGS]),
            out_projection=np.asarray(arrays[OUT_PROJECTION]),
            content_projection=np.asarray(arrays[CONTENT_PROJECTION]),
            user_bias=np.asarray(arrays[USER_BIAS]),
            encoder=str(arrays["encoder"]),
            encoder_arrays={name[len(ENCODER_PREFIX) :]: np.asarray(arrays[name]) for name in arrays if name.startswith(ENCODER_PREFIX)},
            item_item_weight=float(arrays["item_item_weight"]),
            item_item_half_life=float(arrays["item_item_half_life"]),
            item_item_l2=float(arrays["item_item_l2"]),
            # Models exported before the transition term had none.
            transition_weight=float(arrays["transition_weight"]) if "transition_weight" in arrays else 0.0,
        )

    def save(self, path: Path) -> None:
        with open(path, "wb") as file:
            np.savez(file, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> SequentialModel:
        with np.load(path, allow_pickle=False) as arrays:
            return cls.from_arrays(arrays)

    # Read by every visitor's answer: computed once per loaded model.
    @cached_property
    def _movie_order(self) -> np.ndarray:
        return np.argsort(self.movie_ids, kind="stable")

    @cached_property
    def _scoring_vectors(self) -> np.ndarray:
        return self.movie_vectors.T.astype("float64")

    def movie_rows(self, movie_ids) -> np.ndarray:
        """Row of each movieId in this model's tables, -1 where the model does not know the movie."""
        order = self._movie_order
        position = np.minimum(np.searchsorted(self.movie_ids, movie_ids, sorter=order), len(order) - 1)
        rows = order[position]
        return np.where(self.movie_ids[rows] == np.asarray(movie_ids), rows, -1)

    # -- the numpy user encoder -----------------------------------------------------------------

    def encode(self, history: np.ndarray, gaps: np.ndarray, lengths: np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
        """User vectors from history windows (movie rows [B, N] latest first, any value past `lengths`),
        their gap buckets [B, N] and the users' scaled features [B, F] (ignored when the model has none)."""
        history = np.asarray(history)
        n = history.shape[1]
        valid = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
        rows = np.where(valid, history, 0)
        x = self.history_vectors[rows] + self.rank_embeddings[None, :n]
        if len(self.gap_embeddings):
            x = x + self.gap_embeddings[np.where(valid, gaps, 0)]
        x = x.astype("float32")
        e = self.encoder_arrays
        if self.encoder == POOL:
            logits = e["rank_logits"][None, :n] + x @ e["query"]
            hidden = (_masked_softmax(logits, valid)[:, :, None] * x).sum(axis=1)
        else:
            normed = _layer_norm(x, e["ln1_gamma"], e["ln1_beta"])
            query = normed[:, 0] @ e["wq"]
            keys, values = normed @ e["wk"], normed @ e["wv"]
            logits = np.einsum("bd,bnd->bn", query, keys) / np.sqrt(np.float32(keys.shape[-1]))
            attended = np.einsum("bn,bnd->bd", _masked_softmax(logits, valid), values)
            hidden = x[:, 0] + attended @ e["wo"]
            inner = np.maximum(_layer_norm(hidden, e["ln2_gamma"], e["ln2_beta"]) @ e["w1"] + e["b1"], 0.0)
            hidden = _layer_norm(hidden + inner @ e["w2"] + e["b2"], e["ln3_gamma"], e["ln3_beta"])
        # A user with no history at all is known by their content alone.
        hidden = np.where(np.asarray(lengths)[:, None] > 0, hidden, 0.0)
        users = hidden @ self.out_projection + self.user_bias
        if len(self.content_projection) and content is not None:
            users = users + np.asarray(content, dtype="float32") @ self.content_projection
        return users.astype("float32")

    def user_vectors(self, sequences: Sequences, user_rows: np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
        """Vectors of `user_rows`, each known by their whole sequence (its last max_history movies)."""
        user_rows = np.asarray(user_rows)
        history, gaps, lengths = _windows(sequences, user_rows, sequences.lengths[user_rows], self.max_history, 0)
        return self.encode(history, gaps, lengths, None if content is None else content[user_rows])

    def with_popularity(self, weight: float, log_popularity: np.ndarray) -> SequentialModel:
        """The same towers with `weight` × each movie's log popularity added to its bias. Trained with
        in-batch negatives and the log-Q correction, the towers' scores leave popularity out; part of it
        back is a prior on what people rate at all (its weight is chosen on validation)."""
        return replace(self, movie_biases=(self.movie_biases + weight * np.asarray(log_popularity)).astype("float32"))

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Users × movies two-tower scores (float64)."""
        return np.asarray(user_vectors, dtype="float64") @ self._scoring_vectors + self.movie_biases

    def visitor_scores(self, movie_ids, timestamps=None, content: np.ndarray | None = None) -> np.ndarray:
        """Scores over every movie of a visitor known by `movie_ids` in the order they watched them
        (oldest first) and, if known, when (`timestamps`, seconds; without them every gap is 0 days).
        Unknown movies are skipped. Pass the result to `visitor_top_movies` to exclude the named ones."""
        rows = self.movie_rows(np.asarray(movie_ids, dtype="int64"))
        known = rows >= 0
        rows = rows[known]
        times = np.zeros(len(rows), dtype="int64") if timestamps is None else np.asarray(timestamps, dtype="int64")[known]
        sequence = Sequences(np.array([0, len(rows)]), rows.astype("int64"), times)
        return self.scores(self.user_vectors(sequence, np.array([0]), None if content is None else np.asarray(content)[None]))[0]


def _masked_softmax(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    logits = np.where(valid, logits, -1e9).astype("float32")
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits) * valid
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + LAYER_NORM_EPSILON) * gamma + beta


# --- training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """What training reads: the training sequences, the movies' and users' scaled features."""

    sequences: Sequences
    movie_ids: np.ndarray
    movie_content: np.ndarray  # [M, movie features]
    user_content: np.ndarray  # [U, user features]


class _Towers:
    """The trainable arrays, as Keras variables, and the TensorFlow forward pass the numpy encoder mirrors."""

    def __init__(self, n_movies: int, movie_features: int, user_features: int, settings: RankingSettings):
        import keras

        keras.utils.set_random_seed(settings.seed)
        d = settings.dimensions
        small = keras.initializers.RandomNormal(0.0, 0.01, seed=settings.seed)
        glorot = keras.initializers.GlorotUniform(seed=settings.seed + 1)

        def var(name, value):
            return keras.Variable(np.asarray(value, dtype="float32"), name=name)

        def normal(name, shape):
            return var(name, keras.ops.convert_to_numpy(small(shape)))

        def uniform(name, shape):
            return var(name, keras.ops.convert_to_numpy(glorot(shape)))

        self.settings = settings
        self.v = {
            "e_in": normal("e_in", (n_movies, d)),
            "w_in": uniform("w_in", (movie_features, d)),
            "e_out": normal("e_out", (n_movies, d)),
            "w_m": uniform("w_m", (movie_features, d)),
            "movie_biases": var("movie_biases", np.zeros(n_movies)),
            "rank": normal("rank", (settings.max_history, d)),
            "gap": normal("gap", (GAP_BUCKETS if settings.gaps else 0, d)),
            "out": uniform("out", (d, d)),
            "content": uniform("content", (user_features if settings.user_content else 0, d)),
            "user_bias": var("user_bias", np.zeros(d)),
        }
        if settings.encoder == POOL:
            self.v["rank_logits"] = var("rank_logits", -0.05 * np.arange(settings.max_history))
            self.v["query"] = var("query", np.zeros(d))
        elif settings.encoder == ATTENTION:
            for name in ("wq", "wk", "wv", "wo", "w1", "w2"):
                self.v[name] = uniform(name, (d, d))
            for name in ("b1", "b2", "ln1_beta", "ln2_beta", "ln3_beta"):
                self.v[name] = var(name, np.zeros(d))
            for name in ("ln1_gamma", "ln2_gamma", "ln3_gamma"):
                self.v[name] = var(name, np.ones(d))
        else:
            raise ValueError(f"unknown encoder {settings.encoder!r}, expected one of {', '.join(ENCODERS)}")
        self.encoder_names = [name for name in self.v if name in ("rank_logits", "query", "wq", "wk", "wv", "wo", "w1", "w2", "b1", "b2") or name.startswith("ln")]

    @property
    def variables(self) -> list:
        return [value for value in self.v.values() if np.prod(value.shape) > 0]

    def history_vectors(self, movie_content):
        import tensorflow as tf

        return self.v["e_in"] + tf.matmul(movie_content, self.v["w_in"])

    def movie_vectors(self, movie_content):
        import tensorflow as tf

        return self.v["e_out"] + tf.matmul(movie_content, self.v["w_m"])

    def users(self, history_vectors, history, gaps, lengths, content):
        """TensorFlow user vectors: the numpy `SequentialModel.encode`, op for op."""
        import tensorflow as tf

        v, settings = self.v, self.settings
        n = settings.max_history
        valid = tf.range(n)[None, :] < lengths[:, None]
        x = tf.gather(history_vectors, tf.where(valid, history, 0)) + v["rank"][None]
        if settings.gaps:
            x = x + tf.gather(v["gap"], tf.where(valid, gaps, 0))

        def masked_softmax(logits):
            logits = tf.where(valid, logits, -1e9)
            weights = tf.exp(logits - tf.reduce_max(logits, axis=1, keepdims=True)) * tf.cast(valid, "float32")
            return weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-12)

        def layer_norm(h, name):
            mean, variance = tf.nn.moments(h, axes=[-1], keepdims=True)
            return (h - mean) / tf.sqrt(variance + LAYER_NORM_EPSILON) * v[f"{name}_gamma"] + v[f"{name}_beta"]

        if settings.encoder == POOL:
            logits = v["rank_logits"][None] + tf.einsum("bnd,d->bn", x, v["query"])
            hidden = tf.reduce_sum(masked_softmax(logits)[:, :, None] * x, axis=1)
        else:
            normed = layer_norm(x, "ln1")
            query = tf.matmul(normed[:, 0], v["wq"])
            keys, values = tf.einsum("bnd,de->bne", normed, v["wk"]), tf.einsum("bnd,de->bne", normed, v["wv"])
            logits = tf.einsum("bd,bnd->bn", query, keys) / math.sqrt(settings.dimensions)
            attended = tf.einsum("bn,bnd->bd", masked_softmax(logits), values)
            hidden = x[:, 0] + tf.matmul(attended, v["wo"])
            inner = tf.nn.relu(tf.matmul(layer_norm(hidden, "ln2"), v["w1"]) + v["b1"])
            hidden = layer_norm(hidden + tf.matmul(inner, v["w2"]) + v["b2"], "ln3")
        users = tf.matmul(hidden, v["out"]) + v["user_bias"]
        if settings.user_content:
            users = users + tf.matmul(content, v["content"])
        return users

    def export(self, data: TrainingData) -> SequentialModel:
        import tensorflow as tf

        content = tf.constant(data.movie_content, dtype="float32")
        return SequentialModel(
            movie_ids=np.asarray(data.movie_ids),
            movie_vectors=self.movie_vectors(content).numpy(),
            movie_biases=self.v["movie_biases"].numpy(),
            history_vectors=self.history_vectors(content).numpy(),
            rank_embeddings=self.v["rank"].numpy(),
            gap_embeddings=self.v["gap"].numpy(),
            out_projection=self.v["out"].numpy(),
            content_projection=self.v["content"].numpy(),
            user_bias=self.v["user_bias"].numpy(),
            encoder=self.settings.encoder,
            encoder_arrays={name: self.v[name].numpy() for name in self.encoder_names},
        )


class FusedAdam:
    """Adam with Keras's defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7, the same update as
    `keras.optimizers.Adam`), each variable updated by TensorFlow's fused kernel in one pass. Keras 3's
    Adam updates op by op; on CPU that memory traffic over the two movie tables (movies x dimensions
    each) was a third of a training step."""

    BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def build(self, variables) -> None:
        """Create the moments before the step is traced (variables created in a trace make TensorFlow trace twice)."""
        import tensorflow as tf

        self.moments = [(tf.Variable(tf.zeros(variable.shape)), tf.Variable(tf.zeros(variable.shape))) for variable in variables]
        self.iterations = tf.Variable(0.0)

    def apply(self, gradients, variables) -> None:
        import tensorflow as tf

        self.iterations.assign_add(1.0)
        beta_1_power, beta_2_power = tf.pow(self.BETA_1, self.iterations), tf.pow(self.BETA_2, self.iterations)
        for gradient, variable, (m, v) in zip(gradients, variables, self.moments, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=tf.constant(self.learning_rate),
                beta1=tf.constant(self.BETA_1),
                beta2=tf.constant(self.BETA_2),
                epsilon=tf.constant(self.EPSILON),
                grad=tf.convert_to_tensor(gradient),
            )


def log_popularity(sequences: Sequences, n_movies: int) -> np.ndarray:
    """Log of each movie's share of the ratings in `sequences` (a movie never rated counts as rated
    once): in-batch negatives draw candidates in this proportion, and the log-Q correction subtracts it."""
    counts = np.bincount(sequences.movies, minlength=n_movies).astype("float64")
    return np.log(np.maximum(counts, 1.0) / counts.sum()).astype("float32")


def training_prefixes(sequences: Sequences, per_user: int, rng: np.random.Generator, recent: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(user, cut) of the prefixes an epoch trains on, shuffled: the history is the user's movies
    before the cut, the targets the movies from it. `per_user` 0: every cut 1..n-1 of each
    sequence (heavy users dominate); else `per_user` cuts of each user drawn with replacement, each
    user counting alike as in the per-user metrics. With `recent` > 0 a cut's chance grows toward
    the end of the sequence, as exp(recent · position / n)."""
    lengths = sequences.lengths
    counts = np.maximum(lengths - 1, 0)
    if per_user == 0:
        users = np.repeat(np.arange(len(lengths)), counts)
        cuts = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    else:
        users = np.repeat(np.flatnonzero(counts > 0), per_user)
        u = rng.random(len(users))
        if recent > 0:
            # Inverse CDF of a density proportional to exp(recent · x) on [0, 1).
            u = np.log1p(u * np.expm1(recent)) / recent
        cuts = 1 + np.minimum((u * counts[users]).astype("int64"), counts[users] - 1)
    order = rng.permutation(len(users))
    return users[order], cuts[order]


def _targets(sequences: Sequences, users: np.ndarray, cuts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The next k movie rows after each cut [B, k] and whether each exists."""
    position = cuts[:, None] + np.arange(k)[None, :]
    valid = position < sequences.lengths[users][:, None]
    flat = sequences.starts[users][:, None] + np.minimum(position, sequences.lengths[users][:, None] - 1)
    return sequences.movies[flat].astype("int32"), valid


def train_sequential(
    data: TrainingData,
    settings: RankingSettings,
    validate: Callable[[SequentialModel], float] | None = None,
    on_epoch_end: Callable[[int, float, float | None], None] | None = None,
    refit: Sequences | None = None,
    serving: Sequences | None = None,
) -> Trained:
    """Train for `settings.epochs` epochs, or, with `validate` (exported model -> validation NDCG@10),
    stop after `patience` epochs without progress and return the best epoch's model (its two-tower
    part: the item-item term is chosen afterwards, `choose_half_life`, `choose_blend_weight`).

    With `refit` (the users' sequences with their validation ratings too: every rating the held-out
    evaluation knows), the best epoch's weights then train `settings.refit_epochs` more epochs on
    those sequences, so that movies first rated in the validation period get embeddings (9.5% of
    the test ratings of the chronological protocol are of movies with no training rating). With
    `serving` (every rating, test included), that model then trains `settings.serving_epochs` more
    epochs on them: the model to serve, which knows the latest ratings as the item-item term does.
    History: loss, val_ndcg_at_10, seconds."""
    import tensorflow as tf

    sequences = data.sequences
    n_movies = len(data.movie_ids)
    towers = _Towers(n_movies, data.movie_content.shape[1], data.user_content.shape[1], settings)
    optimizer = FusedAdam(settings.learning_rate)
    movie_content = tf.constant(data.movie_content, dtype="float32")
    user_content = tf.constant(data.user_content if settings.user_content else np.zeros((len(data.user_content), 0)), dtype="float32")
    log_q = tf.constant(log_popularity(sequences, n_movies))
    variables = towers.variables
    optimizer.build(variables)
    ints = tf.TensorSpec([None, None], "int32")

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], "int32"), ints, ints, tf.TensorSpec([None], "int32"), ints, tf.TensorSpec([None, None], "float32")])
    def step(users, history, gaps, lengths, targets, target_valid):
        with tf.GradientTape() as tape:
            vectors = towers.users(towers.history_vectors(movie_content), history, gaps, lengths, tf.gather(user_content, users))
            if settings.negatives == ALL_MOVIES:
                logits = tf.matmul(vectors, towers.movie_vectors(movie_content), transpose_b=True) + towers.v["movie_biases"]
                labels = targets
                masked_rows = history
            else:
                # The batch's target movies are the candidates, each logit corrected by log Q (popularity).
                candidates, index = tf.unique(tf.reshape(targets, [-1]))
                content = tf.gather(movie_content, candidates)
                movie_vectors = tf.gather(towers.v["e_out"], candidates) + tf.matmul(content, towers.v["w_m"])
                logits = tf.matmul(vectors, movie_vectors, transpose_b=True) + tf.gather(towers.v["movie_biases"] - log_q, candidates)
                labels = tf.reshape(index, tf.shape(targets))
                # Each history movie's column among the candidates (a lookup over the catalogue), or past them when it is none.
                n_candidates = tf.shape(candidates)[0]
                column_of = tf.scatter_nd(candidates[:, None], tf.range(1, n_candidates + 1), [n_movies]) - 1
                history_columns = tf.gather(column_of, tf.clip_by_value(history, 0, n_movies - 1))
                masked_rows = tf.where(history_columns >= 0, history_columns, n_candidates)
            if settings.mask_history:
                n_logits = tf.shape(logits)[1]
                valid = tf.range(settings.max_history)[None, :] < lengths[:, None]
                rows = tf.where(valid, masked_rows, n_logits)  # past the prefix: an extra column, dropped
                batch = tf.broadcast_to(tf.range(tf.shape(rows)[0])[:, None], tf.shape(rows))
                indices = tf.reshape(tf.stack([batch, rows], axis=-1), [-1, 2])
                hit = tf.scatter_nd(indices, tf.ones(tf.shape(indices)[:1]), tf.stack([tf.shape(rows)[0], n_logits + 1]))
                logits = logits - 1e9 * tf.minimum(hit[:, :-1], 1.0)
            log_probs = tf.nn.log_softmax(logits, axis=1)
            picked = tf.gather(log_probs, labels, batch_dims=1)
            loss = -tf.reduce_sum(picked * target_valid) / tf.maximum(tf.reduce_sum(target_valid), 1.0)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    rng = np.random.default_rng(settings.seed)
    # Called as the traced graph itself: tf.function's per-call binding of the arguments to the
    # signature cost about 1 s of Python over the ~540 steps of a run on ml-latest-small.
    step_function = step.get_concrete_function()

    def run_epoch(on: Sequences) -> float:
        users, cuts = training_prefixes(on, settings.prefixes_per_user, rng, settings.recent)
        losses = []
        for begin in range(0, len(users), settings.batch_size):
            batch_users, batch_cuts = users[begin : begin + settings.batch_size], cuts[begin : begin + settings.batch_size]
            window, gaps, lengths = _windows(on, batch_users, batch_cuts, settings.max_history, 0)
            targets, valid = _targets(on, batch_users, batch_cuts, settings.targets)
            losses.append(float(step_function(batch_users.astype("int32"), window, gaps, lengths, targets, valid.astype("float32"))))
        return float(np.mean(losses))

    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    best, best_weights, best_score, waited = None, None, -math.inf, 0
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        history["loss"].append(run_epoch(sequences))
        model = towers.export(data)
        history["seconds"].append(time.perf_counter() - started)
        score = None
        if validate is not None:
            score = float(validate(model))
            history.setdefault("val_ndcg_at_10", []).append(score)
            if score > best_score:
                best, best_score, waited = model, score, 0
                best_weights = [np.array(variable.numpy()) for variable in variables]
            else:
                waited += 1
        else:
            best = model
        if on_epoch_end is not None:
            on_epoch_end(epoch, history["loss"][-1], score)
        if validate is not None and waited >= settings.patience:
            break

    def restore_best() -> None:
        if best_weights is not None:
            for variable, value in zip(variables, best_weights, strict=True):
                variable.assign(value)

    def train_further(on: Sequences, epochs: int, loss_name: str) -> SequentialModel:
        for _ in range(epochs):
            history.setdefault(loss_name, []).append(run_epoch(on))
        further = towers.export(data)
        history["seconds"].append(time.perf_counter() - started)
        return further

    held_out = best
    if refit is not None:
        restore_best()
        held_out = train_further(refit, settings.refit_epochs, "refit_loss")
    served = held_out
    if serving is not None and settings.serving_epochs:
        if refit is None:
            restore_best()
        served = train_further(serving, settings.serving_epochs, "serving_loss")
    return Trained(best, held_out, served, history)


@dataclass(frozen=True)
class Trained:
    """`validated`: the best epoch's model on validation (choose the item-item term with it);
    `model`: the held-out model, `validated` refitted on training and validation ratings when asked,
    else the same (what the test split measures); `served`: `model` trained on every rating when
    asked, else the same."""

    validated: SequentialModel
    model: SequentialModel
    served: SequentialModel
    history: dict[str, list[float]]

    @property
    def seconds(self) -> float:
        return self.history["seconds"][-1]

    @property
    def best_epoch(self) -> int:
        scores = self.history.get("val_ndcg_at_10")
        return int(np.argmax(scores)) + 1 if scores else len(self.history["loss"])


def keras_user_vectors(model_settings: RankingSettings, model: SequentialModel, history, gaps, lengths, content) -> np.ndarray:
    """The TensorFlow encoder run on an exported model's arrays (for checking the numpy encoder)."""
    import tensorflow as tf

    towers = _Towers.__new__(_Towers)
    towers.settings = model_settings
    towers.v = {
        "rank": tf.constant(model.rank_embeddings),
        "gap": tf.constant(model.gap_embeddings),
        "out": tf.constant(model.out_projection),
        "content": tf.constant(model.content_projection),
        "user_bias": tf.constant(model.user_bias),
        **{name: tf.constant(value) for name, value in model.encoder_arrays.items()},
    }
    content = np.zeros((len(history), 0), "float32") if not model_settings.user_content else np.asarray(content, "float32")
    return towers.users(tf.constant(model.history_vectors), tf.constant(history, "int32"), tf.constant(gaps, "int32"), tf.constant(lengths, "int32"), tf.constant(content)).numpy()
