"""crl: contrastive reinforcement learning from verifiable rewards, as a staged command-line pipeline."""

__version__ = "0.1.0"
