"""Build the optional C accelerator of the header walker.

Everything else is declared in pyproject.toml. When no C compiler is available
the extension is skipped (``optional=True``) and dicomframe uses its
pure-Python walker, which gives the same results, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dicomframe._cwalk",
            sources=["dicomframe/_cwalk.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
