"""The README's Python examples run as written."""

import pathlib
import re


def test_readme_python_blocks_run():
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    # the composition examples produced what they claim
    assert namespace["g"].shape == namespace["p"].means.shape
    assert namespace["ll_batch"].shape == (2,)
