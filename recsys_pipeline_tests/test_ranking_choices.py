"""workflow.train_ranking_model's choices on validation, on a small synthetic MovieLens."""

import dataclasses
import math

import numpy as np
import pytest

from recsys_pipeline import ranking, splits, workflow
from recsys_pipeline.settings import RankingSettings


@pytest.fixture(scope="module")
def candidate(synthetic_movielens_dir):
    feature_set = workflow.build_features(workflow.ingest(synthetic_movielens_dir), seed=3, method=splits.CHRONOLOGICAL)
    settings = dataclasses.replace(RankingSettings(seed=3), dimensions=16, epochs=3, patience=1)
    return workflow.train_ranking_model(feature_set.labelled, feature_set.user_features, feature_set.movie_features, feature_set.scalers, settings)


def test_the_popularity_prior_is_the_best_of_its_weights_on_the_early_stopping_validation(candidate):
    by_weight = candidate.val_ndcg_by_popularity_weight
    assert set(by_weight) == set(ranking.POPULARITY_WEIGHTS)
    assert by_weight[candidate.popularity_weight] == max(by_weight.values())
    # Weight 0 is the towers as trained: the figure early stopping kept, on the same users.
    assert by_weight[0.0] == pytest.approx(max(candidate.history["val_ndcg_at_10"]), abs=1e-12)


def test_each_item_item_choice_is_the_best_on_a_validation_that_follows_training(candidate):
    model = candidate.model
    assert candidate.val_ndcg_by_half_life[model.item_item_half_life] == max(candidate.val_ndcg_by_half_life.values())
    assert candidate.val_ndcg_by_transition_weight[model.transition_weight] == max(candidate.val_ndcg_by_transition_weight.values())
    assert candidate.item_item_weight_rule == workflow.ITEM_ITEM_WEIGHT_RULES[workflow.FOLLOWING]
    assert candidate.served_val_ndcg == max(candidate.val_ndcg_by_item_item_weight.values())


def test_the_served_model_is_the_held_out_one_trained_on_every_rating_with_the_same_choices(candidate, synthetic_movielens_dir):
    held_out, served = candidate.model, candidate.served
    choices = ("item_item_weight", "item_item_half_life", "item_item_l2", "transition_weight")
    assert [getattr(served, name) for name in choices] == [getattr(held_out, name) for name in choices]
    assert len(candidate.history["serving_loss"]) == RankingSettings().serving_epochs
    # Trained further: every table the towers learn has moved.
    for name in ("movie_vectors", "history_vectors", "movie_biases", "out_projection"):
        assert not np.array_equal(getattr(served, name), getattr(held_out, name)), name
    # Without serving epochs the served model is the held-out one.
    feature_set = workflow.build_features(workflow.ingest(synthetic_movielens_dir), seed=3, method=splits.CHRONOLOGICAL)
    settings = dataclasses.replace(RankingSettings(seed=3), dimensions=16, epochs=1, patience=1, serving_epochs=0)
    without = workflow.train_ranking_model(feature_set.labelled, feature_set.user_features, feature_set.movie_features, feature_set.scalers, settings)
    assert "serving_loss" not in without.history
    for name, value in without.model.arrays().items():
        np.testing.assert_array_equal(without.served.arrays()[name], value, err_msg=name)


def test_the_choices_validation_cannot_tell_from_the_best_are_those_within_one_standard_error():
    # Per-user NDCG of four weights: 1 is best; 2 trails it by 0.0125, under one standard error of
    # the paired differences (0.031); inf trails it by 0.1 for every user, far more than its error (0).
    by_weight = {
        0.0: np.array([0.1, 0.2, 0.1, 0.2]),
        1.0: np.array([0.5, 0.6, 0.5, 0.6]),
        2.0: np.array([0.5, 0.5, 0.5, 0.65]),
        math.inf: np.array([0.4, 0.5, 0.4, 0.5]),
    }
    assert workflow.within_one_standard_error(by_weight) == [1.0, 2.0]
    # A constant difference per user has no error: the best only.
    assert workflow.within_one_standard_error({1.0: np.ones(3), 2.0: np.full(3, 0.9)}) == [1.0]
