"""Everything that touches Ray Tune: the trainable, the Optuna wiring, the driver-side store
callback and the launcher. Nothing outside this package imports Ray."""
