"""FedSuite models: plain-Keras builders, their blocks and their FLOP counts."""
