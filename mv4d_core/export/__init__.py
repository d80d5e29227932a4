"""Deployment: export ``MV4DModel.forward`` to one ONNX file (``onnx_export``, ``wrapper``) and build
the cached TensorRT engine of it; ``mv4d export`` is ``command``. The engines that run the file live in
``mv4d_core.engines``.

Nothing here imports torch, onnx or TensorRT at package import time.
"""
