"""The example scripts' shared code, installed with the package (`pip install -e ".[examples]"`) so that each script
imports it normally: `runtime` (errors, logging, precision, checkpoints) and `classification` (the classification
scripts' data, model loading and outputs, which the SimMIM and deployment examples reuse)."""
