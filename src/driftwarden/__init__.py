"""Driftwarden: Kubernetes-native drift monitoring for deployed ML models."""

__version__ = "0.1.0"
