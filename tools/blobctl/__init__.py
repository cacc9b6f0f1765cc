"""blobctl, the blob store's command-line client; the entry point is ``tools.blobctl.cli``."""
