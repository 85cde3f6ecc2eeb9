"""Conversions between rnncore modules and other frameworks' recurrent layers.

``gates`` holds the gate orders; ``keras_layers`` turns one Keras layer into a module's
options and weights (``RNN.from_keras``) and ``keras`` walks a Keras model
(``rnncore.from_keras``); ``onnx_import`` reads the ONNX ``RNN`` / ``LSTM`` / ``GRU`` operators
(``rnncore.from_onnx``); ``onnx_export``, ``onnx_loop`` and ``onnx_graph`` write a module as an
ONNX graph (``rnncore.to_onnx``). Keras and ONNX are imported only inside the functions that
need them.
"""
