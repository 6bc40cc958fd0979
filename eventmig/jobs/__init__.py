"""The jobs: migrate, verify, switch and rollback, rebuild, and what they share; they talk to ports only."""
