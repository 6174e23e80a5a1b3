"""The ranking head's training order: whole users per batch, reshuffled every epoch, reproducible."""

import numpy as np

from recsys_pipeline.retrieval import user_grouped_order


def test_an_epoch_keeps_each_users_ratings_together_in_a_fresh_order_every_epoch():
    rng = np.random.default_rng(0)
    user_rows = rng.integers(0, 40, 2_000)
    epochs = np.random.default_rng(7)
    first, second = user_grouped_order(user_rows, 40, epochs), user_grouped_order(user_rows, 40, epochs)
    for order in (first, second):
        assert np.array_equal(np.sort(order), np.arange(len(user_rows)))
        users_in_order = user_rows[order]
        # Each user appears as one run: the number of runs equals the number of distinct users.
        assert 1 + np.count_nonzero(np.diff(users_in_order)) == len(np.unique(user_rows))
    assert not np.array_equal(user_rows[first], user_rows[second])  # users reordered
    assert not np.array_equal(first, second)
    again = np.random.default_rng(7)
    assert np.array_equal(user_grouped_order(user_rows, 40, again), first)
    # A batch of 100 ratings holds few users, where a uniform draw would hold nearly all 40.
    assert len(np.unique(user_rows[first[:100]])) <= 3 < len(np.unique(user_rows[rng.permutation(len(user_rows))[:100]]))
