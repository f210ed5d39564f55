"""setuptools glue: the native op is this distribution's one extension.

``build_ext`` hands the work to ``build_support/native_build.py`` (the one
build, shared with ``scripts/build_kernels.py``), which compiles against the
installed TensorFlow and writes ``_build_info.json`` beside the library.
Everything else is declared in ``pyproject.toml``.
"""

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).resolve().parent / "build_support"))
import native_build  # noqa: E402


class BuildNativeOp(build_ext):
    """Builds ``fusedfocal/ops/_fused_focal_ops.so`` with native_build."""

    def get_ext_filename(self, fullname):
        # tf.load_op_library takes any path; keep the plain name the loader looks for.
        return str(Path(*fullname.split("."))) + ".so"

    def build_extension(self, ext):
        native_build.build_for_install(Path(self.get_ext_fullpath(ext.name)),
                                       build_dir=Path(self.build_temp) / "kernels")

    def get_outputs(self):
        outs = super().get_outputs()
        return outs + [str(Path(o).with_name(native_build.INFO_NAME)) for o in outs]

    def copy_extensions_to_source(self):
        """Editable installs: the library and its build info both land in src/
        (and a library left there by an earlier build goes when this one built none)."""
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace, regular = (Path(f) for f in self._get_inplace_equivalent(build_py, ext))
            if regular.exists():
                self.copy_file(str(regular), str(inplace), level=self.verbose)
            elif inplace.exists():
                inplace.unlink()
            info = regular.with_name(native_build.INFO_NAME)
            self.copy_file(str(info), str(inplace.with_name(info.name)), level=self.verbose)

    def _get_output_mapping(self):
        yield from super()._get_output_mapping()
        if self.inplace:
            build_py = self.get_finalized_command("build_py")
            for ext in self.extensions:
                inplace, regular = self._get_inplace_equivalent(build_py, ext)
                name = native_build.INFO_NAME
                yield str(Path(regular).with_name(name)), str(Path(inplace).with_name(name))


setup(
    # optional: an install without a compiler still installs (see native_build.build_for_install)
    ext_modules=[Extension("fusedfocal.ops._fused_focal_ops", sources=[], optional=True)],
    cmdclass={"build_ext": BuildNativeOp},
)
