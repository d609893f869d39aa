"""One APIRouter per concern: predictions, feedback, probes, metrics."""
