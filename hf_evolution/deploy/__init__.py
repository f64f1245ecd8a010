"""Deployment: a trained recurrent language model outside the training loop.

- `onnx_export`: the causal LM as an ONNX graph whose recurrent state is an explicit input and output
  (`hf-evolution export onnx`);
- `quantization`: torch's dynamic int8 quantization of the recurrent and linear layers (`hf-evolution quantize`);
- `conversion`: a checkpoint of PyTorch's `word_language_model` example into a saved hf_evolution folder
  (`hf-evolution convert`).
"""
