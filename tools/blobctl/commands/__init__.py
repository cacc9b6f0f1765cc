"""blobctl's commands, one module per concept; each has ``register(subparsers, common)``."""
