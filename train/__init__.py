"""Training: state, losses, step functions, the one loop, checkpoints, evaluation."""
import xla_cpu

# Before JAX's CPU backend exists (it reads XLA_FLAGS once): convolutions on XLA's Eigen
# kernels, 2-4x faster weight gradients than YNNPACK's (xla_cpu.py says why and when not).
xla_cpu.configure()
