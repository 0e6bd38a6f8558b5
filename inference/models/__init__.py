"""Model architectures that packages name (``densenet``); CheXNet checkpoints to packages (``chexnet``)."""
