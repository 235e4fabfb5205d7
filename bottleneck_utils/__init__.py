"""Companion code for "A Hidden Semantic Bottleneck in Conditional Embeddings of Diffusion Transformers".

One module per noun of the paper: data, models (+ convert), embeddings, stats, sampling, classifier, train.
"""

__version__ = "0.1.0"
