"""ctp_nipype: CT perfusion maps (SVD family and a Transformer) as Nipype interfaces and workflows."""

__version__ = "0.1.0"
__url__ = "https://github.com/ctp-nipype/ctp_nipype"
