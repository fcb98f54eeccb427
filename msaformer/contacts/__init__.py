"""Contacts you can check: coevolution baselines, precision at L, evaluation against structures, and fitting
a model's contact head."""
