"""The time-aware two-tower (recsys_pipeline.sequential) on a tiny sequence whose next movie only order tells."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import features, ranking, recommend, sequential
from recsys_pipeline.settings import RankingSettings
from recsys_pipeline.standardisation import Standardiser, TargetScaler

N_MOVIES, N_USERS, LENGTH = 30, 240, 10
SETTINGS = RankingSettings(
    dimensions=16,
    max_history=3,
    gaps=False,
    user_content=False,
    targets=1,
    epochs=25,
    batch_size=128,
    learning_rate=0.02,
    prefixes_per_user=8,
    seed=3,
)


def walks(seed: int = 0):
    """Each user walks the movies in steps of +1 or -1 (mod N_MOVIES) from a random start. The last
    three movies as a bag are {x, x+1, x+2} both for an ascending walk (next x+3) and a descending one
    (next x-1): only their order says which comes next, so a bag of movies is right at most half the time."""
    rng = np.random.default_rng(seed)
    starts, directions = rng.integers(0, N_MOVIES, N_USERS), rng.choice([-1, 1], N_USERS)
    movies = (starts[:, None] + directions[:, None] * np.arange(LENGTH + 1)[None, :]) % N_MOVIES
    times = 1_000_000 + 3_600 * np.arange(LENGTH + 1)[None, :].repeat(N_USERS, axis=0)
    users = np.repeat(np.arange(N_USERS), LENGTH + 1).reshape(N_USERS, LENGTH + 1)
    return users, movies, times


def training_data(movie_ids=None):
    users, movies, times = walks()
    # Training: all but each user's last movie, the one to predict.
    sequences = sequential.user_sequences(users[:, :-1].ravel(), movies[:, :-1].ravel(), times[:, :-1].ravel(), N_USERS)
    movie_ids = np.arange(100, 100 + N_MOVIES) if movie_ids is None else movie_ids
    content = np.random.default_rng(1).normal(size=(N_MOVIES, 4)).astype("float32")
    return sequential.TrainingData(sequences, movie_ids, content, np.zeros((N_USERS, 0), "float32")), movies[:, -1]


@pytest.fixture(scope="module")
def trained():
    data, _ = training_data()
    return sequential.train_sequential(data, SETTINGS)


def test_the_model_learns_what_only_order_tells(trained):
    data, following = training_data()
    model = trained.model
    scores = model.scores(model.user_vectors(data.sequences, np.arange(N_USERS)))
    # As served: never a movie the user rated (training masks them out of the softmax, so their scores mean nothing).
    rated = np.zeros_like(scores, dtype=bool)
    rated[np.repeat(np.arange(N_USERS), LENGTH), data.sequences.movies] = True
    top = ranking.top_movies(scores, 1, rated)[0][:, 0]
    # A bag of the last three movies cannot beat 0.5 here.
    assert (top == following).mean() > 0.9


def test_the_numpy_encoder_reproduces_keras(trained):
    data, _ = training_data()
    for encoder in sequential.ENCODERS:
        settings = replace(SETTINGS, encoder=encoder, gaps=True, user_content=True, epochs=2)
        content_data = replace(data, user_content=np.random.default_rng(2).normal(size=(N_USERS, 5)).astype("float32"))
        model = sequential.train_sequential(content_data, settings).model
        rng = np.random.default_rng(4)
        history = rng.integers(0, N_MOVIES, (64, settings.max_history)).astype("int32")
        gaps = rng.integers(0, sequential.GAP_BUCKETS, (64, settings.max_history)).astype("int32")
        lengths = rng.integers(1, settings.max_history + 1, 64).astype("int32")
        content = content_data.user_content[:64]
        expected = sequential.keras_user_vectors(settings, model, history, gaps, lengths, content)
        np.testing.assert_allclose(model.encode(history, gaps, lengths, content), expected, atol=1e-5)


def test_exported_arrays_round_trip_through_npz(trained, tmp_path):
    model = replace(trained.model, item_item_weight=0.5, item_item_half_life=10.0, transition_weight=2.0)
    path = tmp_path / "sequential.npz"
    model.save(path)
    loaded = sequential.SequentialModel.load(path)
    assert loaded.encoder == model.encoder and loaded.item_item_weight == 0.5 and loaded.item_item_half_life == 10.0 and loaded.transition_weight == 2.0
    for name, value in model.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], value)
    data, _ = training_data()
    rows = np.arange(20)
    np.testing.assert_array_equal(loaded.user_vectors(data.sequences, rows), model.user_vectors(data.sequences, rows))
    # A model exported before the transition term (a release one may roll back to) serves without it.
    older = {name: value for name, value in model.arrays().items() if name != "transition_weight"}
    np.savez(tmp_path / "older.npz", **older)
    assert sequential.SequentialModel.load(tmp_path / "older.npz").transition_weight == 0.0


def test_seeded_runs_are_identical(trained):
    data, _ = training_data()
    again = sequential.train_sequential(data, SETTINGS)
    for name, value in trained.model.arrays().items():
        np.testing.assert_array_equal(again.model.arrays()[name], value)
    assert again.history["loss"] == trained.history["loss"]


def visitor_top(model, named, k):
    """The visitor's k best movieIds as served: towers scores, never a movie they named."""
    movie_ids = model.movie_ids
    scores = ranking.visitor_scores(model, named, None, movie_ids)
    columns, _ = ranking.top_movies(scores[None], k, np.isin(movie_ids, named)[None])
    return movie_ids[columns[0]]


def test_a_visitor_is_scored_by_the_same_encoder_and_never_shown_what_they_named(trained):
    model = trained.model
    named = [105, 106, 107]  # an ascending walk: next is 108
    top = visitor_top(model, named, k=N_MOVIES - len(named))
    assert not set(named) & set(top.tolist())
    assert len(top) == N_MOVIES - len(named)
    assert top[0] == 108
    assert visitor_top(model, named[::-1], k=1)[0] == 104
    # Unknown movies are skipped.
    assert visitor_top(model, [99_999, *named], k=1)[0] == 108


def test_visitors_rank_only_allowed_movies_as_a_selection_over_every_movie_would(trained):
    """recommend.Visitors ranks among the admitted movies only (fast); the answer is that of ranking
    every movie with the others excluded, ties and movies the model does not know included."""
    model = trained.model
    rng = np.random.default_rng(0)
    movie_ids = np.r_[model.movie_ids, 99_999]  # the last one is unknown to the model
    table = pd.DataFrame({"movieId": movie_ids, "rating_count": rng.integers(0, 5, len(movie_ids))})
    for genre in ("Action", "Drama", "Horror"):
        table[features.GENRE_PREFIX + genre] = rng.integers(0, 2, len(movie_ids)).astype("float64")
    stars = TargetScaler(minimum=0.5, maximum=5.0)
    statistics = recommend.Visitors(table, stars).features([("Drama", 4.0)], [])
    scaler = Standardiser("user", list(statistics), [0.0] * len(statistics), [1.0] * len(statistics))
    visitors = recommend.Visitors(table, stars, model, scaler)
    for genre_ratings, named, min_ratings in [([], [105, 106, 107], 0), ([("Drama", 4.5), ("Horror", 1.0)], [105], 2), ([("action", 3.5)], [], 4)]:
        rows, scores = visitors.rank(8, genre_ratings, named, min_ratings)
        every = ranking.visitor_scores(model, named, None, movie_ids)
        excluded = (table["rating_count"].to_numpy() < min_ratings) | np.isin(movie_ids, named)
        if genre_ratings:
            excluded |= ~visitors.candidates(genre_ratings)
        columns, best = ranking.top_movies(every[None], 8, excluded[None])
        finite = np.isfinite(best[0])
        np.testing.assert_array_equal(rows, columns[0][finite])
        np.testing.assert_array_equal(scores, best[0][finite])
    assert visitors.rank(8, [], [105], min_ratings=100)[0].size == 0


def test_same_second_ratings_are_ordered_by_movie_id():
    sequences = sequential.user_sequences(np.zeros(3, int), np.array([0, 1, 2]), np.array([5, 5, 1]), 1, movie_ids=np.array([30, 10, 20]))
    np.testing.assert_array_equal(sequences.movies, [2, 1, 0])


def test_in_batch_negatives_with_log_q_train():
    data, _ = training_data()
    trained = sequential.train_sequential(data, replace(SETTINGS, negatives=sequential.IN_BATCH, epochs=2))
    assert np.isfinite(trained.history["loss"]).all()


def test_a_popularity_prior_adds_its_weight_times_each_movies_log_share_to_its_score(trained):
    data, _ = training_data()
    log_popularity = sequential.log_popularity(data.sequences, N_MOVIES)
    counts = np.maximum(np.bincount(data.sequences.movies, minlength=N_MOVIES), 1)
    np.testing.assert_allclose(np.exp(log_popularity), counts / counts.sum(), rtol=1e-6)
    users = trained.model.user_vectors(data.sequences, np.arange(5))
    for weight in (0.0, 0.5):
        shifted = trained.model.with_popularity(weight, log_popularity)
        np.testing.assert_allclose(shifted.scores(users), trained.model.scores(users) + weight * log_popularity, rtol=1e-6, atol=1e-6)
    assert np.array_equal(trained.model.with_popularity(0.0, log_popularity).movie_biases, trained.model.movie_biases)


def test_the_fused_adam_makes_keras_adams_updates():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = rng.normal(size=(40, 8)).astype("float32")
    gradients = [rng.normal(size=(40, 8)).astype("float32") for _ in range(5)]
    fused_variable, keras_variable = tf.Variable(start), keras.Variable(start)
    fused, reference = sequential.FusedAdam(0.01), keras.optimizers.Adam(0.01)
    fused.build([fused_variable])
    for gradient in gradients:
        fused.apply([tf.constant(gradient)], [fused_variable])
        reference.apply_gradients([(tf.constant(gradient), keras_variable)])
    assert not np.allclose(fused_variable.numpy(), start)
    np.testing.assert_allclose(fused_variable.numpy(), keras_variable.numpy(), rtol=1e-5, atol=1e-6)
