"""A content-based two-tower movie recommender on MovieLens, orchestrated by Dagster.

The modules at this level are the domain: plain pandas, numpy and Keras, with no Dagster
import. `recsys_pipeline.orchestration` is the thin Dagster layer that calls them, and
`recsys_pipeline.definitions` is the code location.
"""
