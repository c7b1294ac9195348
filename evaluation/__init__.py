"""Everything that runs offline only: scorers over every test target, their memories, example builders, factories."""
