"""Proxy tasks: small training problems, tuning and scoring against tuned AdamW, and the bench."""
