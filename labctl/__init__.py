"""labctl: a PyTorch Jupyter lab on Azure (or any SSH host, or this computer) in one command."""

__version__ = "0.1.0"
