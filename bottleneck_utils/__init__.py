"""Companion code for "A Hidden Semantic Bottleneck in Conditional Embeddings of Diffusion Transformers".

One job per module; the README's table lists them. The paper's pipeline (models, embeddings, stats, masks,
sampling, features, metrics) is kept apart from the model organisms (data, classifier, ising, composite, train,
ladder) and from what the chapters import (report, paper, plots). The build tooling is ``tools/book.py``.
"""

__version__ = "0.1.0"
