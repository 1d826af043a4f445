"""`gpunode audit`: run checks against a Host and report them."""
