"""``python -m label_smoothing`` prints the version, the instruction set and the thread count."""
import label_smoothing

print(f"label_smoothing {label_smoothing.__version__}: kernels on {label_smoothing.instruction_set()}, "
      f"{label_smoothing.get_num_threads()} threads")
