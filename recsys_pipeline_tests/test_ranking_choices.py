"""workflow.train_ranking_model's choices on validation, on a small synthetic MovieLens."""

import dataclasses

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


def test_each_item_item_choice_is_the_best_on_validation(candidate):
    model = candidate.model
    assert candidate.val_ndcg_by_half_life[model.item_item_half_life] == max(candidate.val_ndcg_by_half_life.values())
    assert candidate.val_ndcg_by_transition_weight[model.transition_weight] == max(candidate.val_ndcg_by_transition_weight.values())
    assert candidate.served_val_ndcg == max(candidate.val_ndcg_by_item_item_weight.values())
