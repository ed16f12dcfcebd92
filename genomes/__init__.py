"""The built-in search spaces (TOML data files); `genesis.core.space.load_search_space` reads them by name."""
