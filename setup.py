"""Build script: everything is in setup.cfg except the optional C accelerator.

``wssync._speedups`` (WebSocket masking) is compiled where a C compiler is
available; if building it fails for any reason the package installs without
it and uses its pure-Python code path, which gives identical results.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, ...
            print(f"wssync: optional C accelerator not built ({exc}); using pure Python")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"wssync: optional C accelerator not built ({exc}); using pure Python")


setup(
    ext_modules=[Extension("wssync._speedups", ["wssync/_speedups.c"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
