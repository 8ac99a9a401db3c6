"""Export a swinv2_hf folder to the original (.pth), timm or transformers layout.

    python conversion/export.py --model-dir swinv2-tiny --to original --output swinv2_tiny.pth

The same as `swinv2-hf export`; the logic lives in `swinv2_hf.hub_folder`.
"""

import sys

from swinv2_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
