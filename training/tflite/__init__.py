"""TFLite models as torch modules: `read_graph` parses a .tflite file, `convert` builds one."""

from training.tflite.convert import SUPPORTED, TFLiteModule, UnsupportedOperator, convert
from training.tflite.graph import Graph, TFLiteFormatError, read_graph

__all__ = ["SUPPORTED", "Graph", "TFLiteFormatError", "TFLiteModule", "UnsupportedOperator",
           "convert", "read_graph"]
