"""`slsp bench`: in-process stage timings (`engines`) and a load generator for the live server (`server`), written
as results files by `timing.save`. Every figure is reported next to a baseline measured in the same run (machines
here are noisy): TrSOR next to its memory floor, ONNX Runtime next to PyTorch eager, the server next to in-process
ONNX Runtime."""
