"""`python -m models.conv_kernels`: which convolution kernels this machine's CPU gets."""
from models.conv_kernels import main

main()
