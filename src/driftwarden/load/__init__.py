"""Load generation against any /predict URL: ``driftwarden load`` and the serving bench."""
