"""Deployment: export the inference graph to ONNX (``onnx_export``, ``graph``), and the engines that
run it behind the pipeline's Engine interface (``engines_onnx``: onnxruntime; ``engines_tensorrt``:
TensorRT with an on-disk engine cache). ``mv4d export`` is ``command``.

Nothing here imports torch, onnx or TensorRT at package import time.
"""
