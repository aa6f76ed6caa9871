"""tf.data input pipelines: sources of feature dicts, augmentation, batching.

Importing this package registers every data source by name (see `data.sources`).
"""
