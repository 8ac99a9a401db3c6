"""The SwinV2 Gradio demo (`app.py`) and the Hub Space folder that carries it (`space.py`), installed as
`swinv2_hf_demo` so that `swinv2-hf space` finds the app wherever the package is installed."""
