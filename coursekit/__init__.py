"""coursekit: the helper package of a deep-learning-for-computer-vision course."""
__version__ = "0.1.0"
