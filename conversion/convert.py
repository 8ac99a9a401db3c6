"""Convert an original, timm or transformers SwinV2 checkpoint into a verified, Hub-ready swinv2_hf folder.

    python conversion/convert.py --source original --checkpoint swinv2_tiny_patch4_window8_256.pth \
        --model-name swinv2_tiny_patch4_window8_256 --output-dir swinv2-tiny [--push-to-hub user/swinv2-tiny]

The same as `swinv2-hf convert`; the logic lives in `swinv2_hf.hub_folder`.
"""

import sys

from swinv2_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
