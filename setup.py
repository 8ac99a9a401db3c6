import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "(.+)"', Path(__file__).with_name("swinv2_hf").joinpath("version.py").read_text())[
    1
]
# The demo app: gradio, and the sample images of scikit-image and scikit-learn (shipped inside the packages).
DEMO = ["gradio>=6,<7", "matplotlib>=3.7", "scikit-image>=0.19", "scikit-learn>=1.3"]
ONNX = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]

setup(
    name="swinv2_hf",
    version=VERSION,
    description="Swin Transformer V2 (arXiv 2111.09883) as Hugging Face Transformers models, exact to the original",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The examples' shared code and the demo install beside the package: scripts import them without path tricks, and
    # `swinv2-hf space` finds the demo app.
    packages=[*find_packages(include=["swinv2_hf", "swinv2_hf.*"]), "swinv2_hf_examples", "swinv2_hf_demo"],
    package_dir={"swinv2_hf_examples": "examples/swinv2_hf_examples", "swinv2_hf_demo": "examples/demo"},
    package_data={"swinv2_hf": ["templates/*.md"]},
    entry_points={"console_scripts": ["swinv2-hf = swinv2_hf.cli:main"]},
    install_requires=[
        "torch>=2.4,<3",
        "transformers>=5.24,<6",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "pillow>=10",
        "pyyaml>=6",
        "jinja2>=3",
    ],
    extras_require={
        # onnx: the exporters (onnxscript for torch's dynamo exporter) and onnxruntime to check and quantize.
        "onnx": ONNX,
        # playwright: drives Debian's chromium in the demo's browser test (no browser download).
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2",
            "pytest-xdist>=3.5",
            "ruff>=0.15",
            "scipy>=1.10",
            "playwright>=1.50",
            *ONNX,
            *DEMO,
        ],
        "demo": DEMO,
        "benchmarks": ["matplotlib>=3.7"],
        # scipy: the DETR losses' matching; pycocotools: COCO mAP; scikit-image: the example's photographs.
        "examples": [
            "accelerate>=1.0",
            "datasets>=3.0",
            "evaluate>=0.4",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "tqdm>=4.60",
            "scipy>=1.10",
            "pycocotools>=2.0.7",
            "scikit-image>=0.19",
        ],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
