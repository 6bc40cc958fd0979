"""Test helpers for services that use eventmig: strategies, property checks, pytest plugin."""
