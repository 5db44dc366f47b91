"""Live Gaussian scene: initialisation from RGB-D, per-frame tracking, object-id voting, PLY I/O."""
