"""Model architectures that packages name (``densenet``: CheXNet's DenseNet-121; ``demo_cxr``: the demo
model this project trains); published CheXNet checkpoints to packages (``chexnet``)."""
