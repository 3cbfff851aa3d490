"""Importers of published auxiliary corpora into the toolkit's shard format."""
