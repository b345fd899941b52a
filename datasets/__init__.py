"""Datasets: local loaders, seeded client partitions, federated views."""
