"""Serving benchmark: the model server against the seed design (Flask, one DataFrame per request)."""
