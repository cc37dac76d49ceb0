"""The 'What changed here?' map tool, its panel and its requests."""
