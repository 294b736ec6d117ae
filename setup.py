"""Maps the architecture's top-level folders onto the ``metaedge.*`` namespace.

``sdk/`` becomes ``metaedge.sdk`` and so on; generic top-level names such as ``sdk`` or
``deploy`` belong to other distributions, so the package never installs them bare.
"""
from setuptools import find_packages, setup

ROOTS = ("sdk", "deploy", "backends", "firmware_sim")

# ``api/`` is the top-level ``metaedge`` package itself: the public names and ``python -m metaedge``.
packages = ["metaedge"]
package_dir = {"metaedge": "api"}
for root in ROOTS:
    package_dir[f"metaedge.{root}"] = root
    packages.append(f"metaedge.{root}")
    packages += [f"metaedge.{root}.{sub}" for sub in find_packages(root)]

setup(packages=packages, package_dir=package_dir, package_data={"metaedge": ["py.typed", "specs/*.md"]})
