"""Serving formats other tools already speak: TensorFlow Serving's REST predict API and the
Open Inference Protocol v2 (KServe, Triton), over the same prediction path as /v1 predict."""
