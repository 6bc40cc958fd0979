"""The fold shared by rebuild, replay and follow (see :mod:`eventmig.projection.fold`)."""
