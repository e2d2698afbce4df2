"""IntentOps: train, check and ship an LLM intent detector."""

__version__ = "0.1.0"
