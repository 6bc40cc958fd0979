"""Events, upcaster registries, chains and digests: pure data and functions, no I/O."""
