"""Datasets and batching: the built-in multilingual dataset, tokenised splits, iterators."""
