"""Conversion: Hub-style repo -> safe state dict -> ``BertModel`` -> ONNX (and the numpy reference).

Works on directories only; finding a catalog model's installed directory is ``zoo.prepare.locate``'s job.
"""
