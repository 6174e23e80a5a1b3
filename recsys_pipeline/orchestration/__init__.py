"""The Dagster layer: assets, checks, resources and IO managers that call the domain modules."""
