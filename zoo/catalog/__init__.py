"""The catalog: stubs -> registry.db -> ModelCard."""

from zoo.catalog.cards import AliasInfo, FileSpec, MetricValue, ModelCard, RecipeInfo
from zoo.catalog.query import Filters, list_models, resolve, search, suggestions

__all__ = ["AliasInfo", "FileSpec", "Filters", "MetricValue", "ModelCard", "RecipeInfo", "list_models", "resolve", "search", "suggestions"]
