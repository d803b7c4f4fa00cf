"""question -> context -> plan -> script."""
