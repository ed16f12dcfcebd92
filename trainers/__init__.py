"""The built-in training recipes (TOML data files); `genesis.core.recipe.load_recipe` reads them by name."""
