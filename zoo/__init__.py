"""The embedded model zoo: a tiny world, its tokenizer, the builder and the committed models."""
