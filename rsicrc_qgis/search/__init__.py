"""The search dock and the scores it writes from stored embeddings."""
