"""Event store backends: one package per kind of store, each implementing the store interface."""
