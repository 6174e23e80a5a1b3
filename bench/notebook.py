"""The notebook's own code, reproduced as the baseline every benchmark compares with.

Faithful to /work/shared/seed/content-based-filtering-notebook.txt: its `iterrows` loop building one
movie row per rating, its `groupby` loop over users and genres, its per-rating feature matrices,
its two `train_test_split` calls, its scalers, and training for 20 epochs at batch 32 with Adam at
learning rate 0.01. The lab's Python double loop over movie pairs is here too. None of this is in
the package; it exists only to be timed.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

SEED = 47005


def notebook_features(movielens_dir: Path) -> dict:
    """Cells 2-12: read, per-rating movie rows (iterrows), one-hot genres, per-user genre averages
    (groupby), per-rating user rows, the target, and the 70/15/15 split."""
    movies = pd.read_csv(movielens_dir / "movies.csv")
    ratings = pd.read_csv(movielens_dir / "ratings.csv")
    movies["year"] = movies["title"].str.extract(r"\((\d{4})\)")
    movies["year"] = movies["year"].fillna("2000")

    movies_data = []
    for _, rating in ratings.iterrows():
        movie = movies[movies["movieId"] == rating["movieId"]]
        if not movie.empty:
            movies_data.append(
                {
                    "movieId": movie.iloc[0]["movieId"],
                    "title": movie.iloc[0]["title"],
                    "year": movie.iloc[0]["year"],
                    "genres": movie.iloc[0]["genres"],
                    "average_rating": ratings[ratings["movieId"] == rating["movieId"]]["rating"].mean(),
                }
            )
    movies_df = pd.DataFrame(movies_data)

    genres_one_hot = movies_df["genres"].str.get_dummies(sep="|")
    movies_df_onehot = pd.concat([movies_df, genres_one_hot], axis=1)
    movies_df_onehot.drop(columns=["genres", "(no genres listed)"], inplace=True, errors="ignore")

    user_genre_ratings = {}
    merged_df = pd.concat([ratings[["userId", "rating"]], movies_df_onehot], axis=1)
    for user_id, user_ratings in merged_df.groupby("userId"):
        genre_ratings = {}
        for genre in movies_df_onehot.columns[4:]:
            mask = user_ratings[genre] == 1
            genre_ratings[genre + "_rating"] = user_ratings.loc[mask, "rating"].mean()
        user_genre_ratings[user_id] = genre_ratings
    user_ratings_df = pd.DataFrame(user_genre_ratings).T.reset_index().rename(columns={"index": "userId"})
    user_ratings_df.fillna(0, inplace=True)
    users_df = pd.merge(ratings[["userId"]], user_ratings_df, on="userId", how="left")
    y = np.array(ratings["rating"])

    movie_features = [c for c in movies_df_onehot.columns if c not in ["movieId", "title"]]
    user_features = [c for c in users_df.columns if c not in ["userId"]]
    movie_train, movie_, user_train, user_, y_train, y_ = train_test_split(
        movies_df_onehot[movie_features], users_df[user_features], y, test_size=0.3, random_state=SEED
    )
    movie_cv, movie_test, user_cv, user_test, y_cv, y_test = train_test_split(movie_, user_, y_, test_size=0.5, random_state=SEED)
    return {
        "movie": (movie_train, movie_cv, movie_test),
        "user": (user_train, user_cv, user_test),
        "y": (y_train, y_cv, y_test),
    }


def notebook_scaling(features: dict) -> dict:
    """Cell 13: StandardScaler on the per-rating movie and user rows, MinMaxScaler((-1, 1)) on ratings."""
    movie_scaler, user_scaler, target_scaler = StandardScaler(), StandardScaler(), MinMaxScaler((-1, 1))
    movie_train, movie_cv, movie_test = features["movie"]
    user_train, user_cv, user_test = features["user"]
    y_train, y_cv, y_test = features["y"]
    return {
        "movie": (movie_scaler.fit_transform(movie_train), movie_scaler.transform(movie_cv), movie_scaler.transform(movie_test)),
        "user": (user_scaler.fit_transform(user_train), user_scaler.transform(user_cv), user_scaler.transform(user_test)),
        "y": tuple(
            scaled.ravel()
            for scaled in (
                target_scaler.fit_transform(y_train.reshape(-1, 1)),
                target_scaler.transform(y_cv.reshape(-1, 1)),
                target_scaler.transform(y_test.reshape(-1, 1)),
            )
        ),
        "target_scaler": target_scaler,
    }


def notebook_training(user_train, movie_train, y_train, user_cv, movie_cv, y_cv, seed: int = SEED, epochs: int = 20):
    """Cells 14-22: the two towers (Dense 256-128-32, l2-normalised, dot product), MSE, Adam at 0.01,
    `model.fit` on the per-rating arrays for 20 epochs at Keras' default batch size of 32."""
    import keras

    keras.utils.set_random_seed(seed)

    def tower():
        return keras.Sequential([keras.layers.Dense(256, activation="relu"), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(32)])

    input_user = keras.Input((user_train.shape[1],))
    input_movie = keras.Input((movie_train.shape[1],))
    vu = keras.layers.UnitNormalization()(tower()(input_user))
    vm = keras.layers.UnitNormalization()(tower()(input_movie))
    model = keras.Model([input_user, input_movie], keras.layers.Dot(axes=1)([vu, vm]))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss=keras.losses.MeanSquaredError())
    model.fit([user_train, movie_train], y_train, epochs=epochs, batch_size=32, validation_data=([user_cv, movie_cv], y_cv), verbose=0)
    return model


def sq_dist(a, b):
    """The lab's distance of two embeddings."""
    return np.sum((a - b) ** 2)


def lab_distance_matrix(vms: np.ndarray) -> np.ndarray:
    """The lab's distance matrix: a Python double loop over every pair of movies."""
    dim = len(vms)
    dist = np.zeros((dim, dim))
    for i in range(dim):
        for j in range(dim):
            dist[i, j] = sq_dist(vms[i, :], vms[j, :])
    return dist


def lab_nearest(dist: np.ndarray) -> np.ndarray:
    """The lab's most similar movie per row: argmin of the matrix with its diagonal masked."""
    masked = np.ma.masked_array(dist, mask=np.identity(dist.shape[0]))
    return np.array([np.argmin(masked[i]) for i in range(dist.shape[0])])
