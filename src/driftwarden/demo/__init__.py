"""The local end-to-end demo (``make demo`` -> ``driftwarden demo``); see docs/demo.md."""
